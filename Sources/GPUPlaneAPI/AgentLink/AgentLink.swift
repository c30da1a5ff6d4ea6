import CurlHTTP
import Foundation
import GPUPlaneCore

/// The api-server's way to node-agents' listeners (``NodeSpec/agentURL``): each node's key
/// (``AgentRequestSignature``), derived from the cluster secret that also keys inference URLs
/// (read and kept by ``InferenceKeys``), and signed requests over libcurl, verified against
/// `agent-ca-file` when an agent serves HTTPS.
public final class AgentLink: Sendable {
    private let keys: InferenceKeys
    let http: CurlHTTP.Client
    let tls: CurlHTTP.TLS?

    /// A link whose node keys come from `keys`' cluster secret; `caFile` verifies agents that
    /// serve HTTPS.
    public init(keys: InferenceKeys, caFile: String? = nil) {
        self.keys = keys
        http = CurlHTTP.Client(name: "agent-curl", maxConnections: 64)
        tls = caFile.map { CurlHTTP.TLS(caFile: $0) }
    }

    /// Node `node`'s key.
    /// - Throws: ``APIError`` 503 when the secret cannot be read or made.
    func key(node: String) async throws -> [UInt8] {
        AgentRequestSignature.nodeKey(clusterKey: try await keys.secretBytes(), node: node)
    }

    /// Starts `GET <agentURL><target>`, signed for `node`; returns when the answer's head is in.
    /// - Throws: ``APIError`` 502 when the agent cannot be reached, 503 without a key.
    func get(node: String, agentURL: String, target: String, follow: Bool) async throws -> CurlHTTP.StreamedResponse {
        var base = agentURL
        while base.hasSuffix("/") { base.removeLast() }
        let expires = Int64(Date().timeIntervalSince1970) + AgentRequestSignature.lifetime
        let authorization = AgentRequestSignature.authorization(key: try await key(node: node), method: "GET", target: target, expires: expires)
        do {
            return try await http.exchange(
                CurlHTTP.Request(
                    method: .get, url: base + target, headers: [CurlHTTP.Header("Authorization", authorization)],
                    timeout: follow ? nil : .seconds(30), connectTimeout: .seconds(5), tls: tls))
        } catch {
            throw APIError(.badGateway, .upstream, "node \(node)'s agent at \(base) did not answer: \(error.message)")
        }
    }
}
