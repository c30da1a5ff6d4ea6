import Foundation
import GPUPlaneCore
import Testing

@testable import GPUPlaneAPI

/// The ingress's decisions without a cluster: how a URL splits, which pod a path picks, what
/// is rewritten and what is never forwarded.
@Suite struct AppIngressUnitTests {
    @Test func aURLSplitsIntoTenantApplicationRestAndQuery() {
        #expect(AppIngress.target("/apps/acme/shop/api/items?x=1&y") == .init(tenant: "acme", application: "shop", rest: "/api/items", query: "x=1&y"))
        #expect(AppIngress.target("/apps/acme/shop/") == .init(tenant: "acme", application: "shop", rest: "/", query: nil))
        #expect(AppIngress.target("/apps/acme/shop") == .init(tenant: "acme", application: "shop", rest: "/", query: nil))
        #expect(AppIngress.target("/apps/acme/") == nil)
        #expect(AppIngress.target("/apps//shop/api") == nil)
        #expect(AppIngress.target("/v1/apps/acme/shop") == nil)
    }

    @Test func theLongestWholeSegmentPathWins() {
        let app = GPUPlaneCore.Application(
            metadata: ObjectMeta(name: "shop", tenant: "acme"),
            spec: ApplicationSpec(pods: [
                Pod(name: "web", path: "/", image: "w:1", servicePorts: [80]),
                Pod(name: "api", path: "/api", image: "a:1", servicePorts: [8000]),
                Pod(name: "v2", path: "/api/v2/", image: "b:1", servicePorts: [8000]),
                Pod(name: "db", image: "d:1", servicePorts: [5432]),
            ]))
        #expect(AppIngress.pod(of: app, for: "/api/items")?.name == "api")
        #expect(AppIngress.pod(of: app, for: "/api")?.name == "api")
        #expect(AppIngress.pod(of: app, for: "/api/")?.name == "api")
        #expect(AppIngress.pod(of: app, for: "/api/v2/items")?.name == "v2")
        #expect(AppIngress.pod(of: app, for: "/apix")?.name == "web")
        #expect(AppIngress.pod(of: app, for: "/")?.name == "web")
        var noRoot = app
        noRoot.spec.pods.removeFirst()
        #expect(AppIngress.pod(of: noRoot, for: "/apix") == nil)
        #expect(AppIngress.pod(of: noRoot, for: "/db") == nil, "a pod without a path is never reached")
    }

    @Test func dotSegmentsAreSpottedPlainOrEncoded() {
        for segment in [".", "..", "%2e", "%2E%2e", ".%2E"] { #expect(AppIngress.isDotSegment(Substring(segment)), "\(segment)") }
        for segment in ["...", "a.", ".env", "%2e%2e%2e"] { #expect(!AppIngress.isDotSegment(Substring(segment)), "\(segment)") }
    }

    @Test func onlyGPUPlaneTokensAreKeptFromTheApplication() {
        #expect(AppIngress.isGPUPlaneToken("Bearer gp_abc"))
        #expect(AppIngress.isGPUPlaneToken("bearer  gp_abc"))
        #expect(!AppIngress.isGPUPlaneToken("Bearer sk-abc"))
        #expect(!AppIngress.isGPUPlaneToken("Basic Z3BfYWJj"))
    }

    @Test func anAbsolutePathLocationComesBackUnderThePrefix() {
        let prefix = "/apps/acme/shop"
        #expect(AppIngress.rewrittenLocation("/api/login", prefix: prefix) == "/apps/acme/shop/api/login")
        #expect(AppIngress.rewrittenLocation("/apps/acme/shop/api", prefix: prefix) == "/apps/acme/shop/api")
        #expect(AppIngress.rewrittenLocation("https://example.com/x", prefix: prefix) == "https://example.com/x")
        #expect(AppIngress.rewrittenLocation("//cdn.example.com/x", prefix: prefix) == "//cdn.example.com/x")
        #expect(AppIngress.rewrittenLocation("next", prefix: prefix) == "next")
    }

    @Test func routesListPodsWithAPathAndTheirReadiness() throws {
        let app = GPUPlaneCore.Application(
            metadata: ObjectMeta(name: "shop", tenant: "acme", uid: "uid-shop"),
            spec: ApplicationSpec(pods: [
                Pod(name: "api", path: "/api/", image: "a:1", servicePorts: [8000, 9000]),
                Pod(name: "db", image: "d:1", servicePorts: [5432]),
            ]))
        var replica = ReplicaPlanner(catalog: try Catalog(models: [])).replicas(for: app)[0]
        replica.binding = Binding(node: "n1", gpuIndices: [])
        replica.status = ReplicaStatus(phase: .running, ready: true, endpoint: "http://10.0.0.5:20001")
        let url = AppIngress.url(base: "https://gpu.example.com/", tenant: "acme", application: "shop")
        #expect(url == "https://gpu.example.com/apps/acme/shop")
        let routes = AppIngress.routes(of: app, appURL: url, replicas: [replica])
        #expect(routes == [ApplicationRoute(pod: "api", path: "/api/", port: 8000, url: url + "/api", ready: true)])
        // Another application's replica of the same name (another uid) is not this one's.
        var stranger = replica
        stranger.spec.owner.uid = "uid-other"
        #expect(AppIngress.routes(of: app, appURL: url, replicas: [stranger]).first?.ready == false)
    }
}
