import Foundation
import GPUPlaneCLI
import GPUPlaneCore
import GPUPlaneTestSupport
import Testing

/// `gpuplane get KIND` as a table, JSON and YAML for every kind that has objects on a live
/// api-server: each object's row shows its name and its columns are filled from the answer's
/// real shape (once, every column of `get tenants` read "-": it looked for fields the tenant
/// routes do not have).
@Suite(.timeLimit(.minutes(3))) struct GetTablesTests {
    @Test func everyKindsTableShowsItsObjects() async throws {
        let (base, admin) = try await OnlineCommandTests.Server.shared.get()
        let asAdmin = APIClient(base: base, token: admin)
        let tenant = "tbl-" + UUID().uuidString.prefix(8).lowercased()
        _ = try await asAdmin.json(.post, "/v1/tenants", body: Data(#"{"name": "\#(tenant)", "plan": "scale", "gpu_limit": 6, "spending_limit_usd": 250}"#.utf8))
        let token = try #require(try await asAdmin.json(.post, "/v1/tokens", body: Data(#"{"tenant": "\#(tenant)", "role": "user"}"#.utf8))["token"].string)
        let user = APIClient(base: base, token: token)
        let applied = try await ApplyCommand.apply(data: Data(OnlineCommandTests.manifest.utf8), file: "app.yaml", client: user)
        #expect(applied.ok, "\(applied.lines)")
        let node = "tbl-" + UUID().uuidString.prefix(6).lowercased()
        let nodeToken = try #require(try await asAdmin.json(.post, "/v1/tokens", body: Data(#"{"role": "node", "node": "\#(node)"}"#.utf8))["token"].string)
        let registration = #"{"name": "\#(node)", "gpus": [{"index": 0, "uuid": "GPU-\#(node)", "product": "NVIDIA H100 80GB HBM3", "memoryMiB": 81559}]}"#
        _ = try await APIClient(base: base, token: nodeToken).json(.post, "/v1/nodes", body: Data(registration.utf8))

        let cases: [(kind: ResourceKindName, client: APIClient, name: String, cells: [String])] = [
            (.applications, user, "web", []),
            (.deployments, user, "\(tenant)/chat-x", ["1×A100-80GB", "8", "1-2"]),
            (.replicas, user, "web.api", ["pending"]),
            (.nodes, asAdmin, node, ["GPU-H100", "1"]),
            (.tenants, asAdmin, tenant, ["scale", "6", "250"]),
        ]
        for (kind, client, name, cells) in cases {
            let table = try await GetCommand.render(kind: kind, name: nil, output: .table, client: client)
            let rows = table.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
            #expect(rows.dropFirst().allSatisfy { $0.first != "-" }, "\(kind): a row without a name:\n\(table)")
            let row = rows.first { $0.first == name }
            #expect(row != nil, "\(kind): no row for \(name):\n\(table)")
            for cell in cells { #expect(row?.contains(cell) == true, "\(kind): \(name)'s row lacks \(cell):\n\(table)") }
            // JSON and YAML carry the same object.
            let json = try await GetCommand.render(kind: kind, name: nil, output: .json, client: client)
            #expect(JSONValue.parse(Data(json.utf8))?["items"].elements.isEmpty == false, "\(kind) -o json:\n\(json.prefix(500))")
            let yaml = try await GetCommand.render(kind: kind, name: nil, output: .yaml, client: client)
            #expect(yaml.contains("items:") && yaml.contains(name.split(separator: "/").last.map(String.init) ?? name), "\(kind) -o yaml:\n\(yaml.prefix(500))")
        }
    }
}
