import Foundation
import GPUPlaneCore
import Testing

/// `podSubnet` at registration and `GET /v1/nodes/{name}/podnetwork`: who may read it and what
/// it names.
struct PodNetworkAPITests {
    func register(_ h: Harness, _ node: String, token: String, subnet: String?, address: String? = "10.0.0.9") async throws -> Reply {
        var body = #"{"name": "\#(node)", "gpus": []"#
        if let address { body += #", "address": "\#(address)""# }
        if let subnet { body += #", "podSubnet": "\#(subnet)""# }
        return try await h.call("POST", "/v1/nodes", token: token, body: body + "}")
    }

    @Test func subnetsAreCheckedAndTheViewIsTheNodesOwn() async throws {
        let h = try await SharedServer.shared.get()
        let tag = UUID().uuidString.prefix(6).lowercased()
        let (a, b) = ("pn-a-\(tag)", "pn-b-\(tag)")
        let tokenA = try await h.nodeToken(a)
        let tokenB = try await h.nodeToken(b)
        let second = Int.random(in: 0..<250)
        let third = Int.random(in: 0..<256)
        let subnet = "10.\(second).\(third).0/24"

        let bad = try await register(h, a, token: tokenA, subnet: "10.\(second).\(third).1/24")
        #expect(bad.status == 422 && bad.text.contains("podSubnet"), "\(bad.text)")
        let noAddress = try await register(h, a, token: tokenA, subnet: subnet, address: nil)
        #expect(noAddress.status == 422 && noAddress.text.contains("address"), "\(noAddress.text)")
        #expect(try await register(h, a, token: tokenA, subnet: subnet).status == 201)
        // Registering again with the same subnet is the node refreshing itself, not an overlap.
        #expect(try await register(h, a, token: tokenA, subnet: subnet).status == 201)
        let overlap = try await register(h, b, token: tokenB, subnet: "10.\(second).0.0/16", address: "10.0.0.10")
        #expect(overlap.status == 409 && overlap.text.contains(a), "\(overlap.text)")
        #expect(try await register(h, b, token: tokenB, subnet: nil, address: "10.0.0.10").status == 201)

        // Node b reads its own view, with a's route; not a's view. Users never.
        let view = try await h.call("GET", "/v1/nodes/\(b)/podnetwork", token: tokenB)
        #expect(view.status == 200)
        let decoded = try JSONDecoder().decode(PodNetworkView.self, from: view.body)
        #expect(decoded.routes.contains(PodNetworkView.Route(node: a, address: "10.0.0.9", podSubnet: subnet)))
        #expect(!decoded.routes.contains { $0.node == b }, "b has no subnet")
        #expect(decoded.pods.isEmpty, "b runs nothing")
        #expect(try await h.call("GET", "/v1/nodes/\(a)/podnetwork", token: tokenB).status == 403)
        let user = try await h.tenant(.pro)
        #expect(try await h.call("GET", "/v1/nodes/\(a)/podnetwork", token: user.token).status == 403)
        #expect(try await h.call("GET", "/v1/nodes/\(a)/podnetwork", token: h.admin).status == 200)
        for node in [a, b] { _ = try await h.call("DELETE", "/v1/nodes/\(node)", token: h.admin) }
    }
}
