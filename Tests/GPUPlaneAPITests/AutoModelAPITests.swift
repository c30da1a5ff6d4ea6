import Foundation
import GPUPlaneAPI
import GPUPlaneCore
import GPUPlaneTestSupport
import Testing

/// "gpu.model — catalog slug, literal auto (Free plan only, scheduler picks a small shared
/// model)": through the api-server, as a tenant of each plan applies it.
@Suite(.timeLimit(.minutes(5))) struct AutoModelAPITests {
    /// Pro and above must name a slug: refused like every plan refusal (403 `forbidden`), at
    /// the field and line of `gpu.model`, saying what to write instead; nothing is stored.
    @Test(arguments: [Plan.pro, .scale, .enterprise])
    func autoIsRefusedAboveTheFreePlan(plan: Plan) async throws {
        let h = try await SharedServer.shared.get()
        let (tenant, token) = try await h.tenant(plan)
        let before = try await h.snapshot(prefix: GPUPlaneCore.Application.storagePrefix(tenant: tenant))
        let reply = try await h.call(
            "POST", "/v1/applications", token: token, body: app("x", pods: "  - {name: a, image: x, gpu: {enabled: true, model: auto}}\n"))
        #expect(reply.status == 403, "\(reply.text)")
        #expect(reply.errorCode == "forbidden")
        #expect(reply.error["field"] as? String == "application.pods[0].gpu.model")
        #expect(reply.error["line"] as? Int == 4)
        #expect(reply.errorMessage.contains("auto is for the Free plan only"), "\(reply.errorMessage)")
        #expect(reply.errorMessage.contains("name a catalog slug in gpu.model"), "\(reply.errorMessage)")
        #expect(try await h.snapshot(prefix: GPUPlaneCore.Application.storagePrefix(tenant: tenant)) == before)
        // The same pod naming a slug is accepted.
        let named = try await h.call(
            "POST", "/v1/applications", token: token, body: app("x", pods: "  - {name: a, image: x, gpu: {enabled: true, model: phi-3.5-mini}}\n"))
        #expect(named.status == 201, "\(named.text)")
    }

    /// On the Free plan `auto` is accepted and resolves to a small Mode 3 chat model, never
    /// the (smaller) embedding model.
    @Test func autoOnTheFreePlanIsASmallChatModel() async throws {
        let h = try await SharedServer.shared.get()
        let (_, token) = try await h.tenant(.free)
        let reply = try await h.call(
            "POST", "/v1/applications", token: token, body: app("free", pods: "  - {name: a, image: x, gpu: {enabled: true, model: auto}}\n"))
        #expect(reply.status == 201, "\(reply.text)")
        let replica = try #require(try await h.call("GET", "/v1/replicas", token: token).items.first)
        let slug = try #require((replica["spec"] as? [String: Any])?["modelSlug"] as? String)
        let model = try #require(try Catalog.standard().model(slug))
        #expect(model.task == .chat && model.mode == .sharedPinned && model.size == .small, "\(slug)")
        #expect(slug != "nomic-embed")
    }
}
