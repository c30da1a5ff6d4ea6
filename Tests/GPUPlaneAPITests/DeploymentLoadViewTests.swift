import Foundation
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneTestSupport
import Testing

/// A deployment's `load` (what the dashboard's Load column shows): the api-servers' latest load
/// reports summed, split into what fits the ready instances and what waits.
@Suite struct DeploymentLoadViewTests {
    @Test func theLoadIsTheReportsSummedAndAbsentWithoutThem() async throws {
        let h = try await SharedServer.shared.get()
        let (tenant, token) = try await h.tenant(.scale, gpuLimit: 8)
        let body = #"{"model_name": "loaded", "gpu": "A100-80GB", "num_gpus": 1, "max_batch_size": 4, "hf": {"repo": "org/model-7b"}, "settings": {"min_instances": 0, "max_instances": 2}}"#
        let created = try await h.call("POST", "/v1/deployments", token: token, body: body)
        #expect(created.status == 201, "\(created.text)")
        let id = try #require(created.json["deploy_id"] as? String)
        // Nobody called it: no load at all.
        #expect(try await h.call("GET", "/v1/deployments/\(id)", token: token).json["load"] == nil)

        // Two api-servers saw 3 and 4 requests at once, one found no ready instance: with no
        // instance ready, all 7 wait.
        let reports = LoadReports(store: h.deps.store)
        let lease = RotatingLease(ttl: .seconds(30))
        try await reports.write([LoadReports.Report(tenant: tenant, deployment: "loaded", load: DeploymentLoad(peak: 3, cold: true))], reporter: "api-a", lease: lease)
        try await reports.write([LoadReports.Report(tenant: tenant, deployment: "loaded", load: DeploymentLoad(peak: 4))], reporter: "api-b", lease: lease)
        let one = try await h.call("GET", "/v1/deployments/\(id)", token: token).json
        let load = try #require(one["load"] as? [String: Any], "\(one)")
        #expect(load["requests"] as? Int == 7)
        #expect(load["in_flight"] as? Int == 0)
        #expect(load["queued"] as? Int == 7)
        #expect(load["cold"] as? Bool == true)
        #expect(load["reporters"] as? Int == 2)
        // The list says the same; another tenant's reports never count.
        let items = try #require(try await h.call("GET", "/v1/deployments", token: token).json["items"] as? [[String: Any]])
        #expect((items.first { $0["model_name"] as? String == "loaded" }?["load"] as? [String: Any])?["requests"] as? Int == 7)
        let (_, otherToken) = try await h.tenant(.scale, gpuLimit: 8)
        #expect(try await h.call("POST", "/v1/deployments", token: otherToken, body: body).status == 201)
        let others = try #require(try await h.call("GET", "/v1/deployments", token: otherToken).json["items"] as? [[String: Any]])
        #expect(others.allSatisfy { $0["load"] == nil }, "\(others)")
    }
}
