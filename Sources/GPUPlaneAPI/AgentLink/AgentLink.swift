import CurlHTTP
import Crypto
import Foundation
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneSystem
import Synchronization

/// The api-server's way to node-agents' listeners (``NodeSpec/agentURL``): each node's key
/// (``AgentRequestSignature``), derived from the cluster secret that also keys inference URLs
/// (``InferenceSecret``), and signed requests over libcurl, verified against `agent-ca-file`
/// when an agent serves HTTPS.
public final class AgentLink: Sendable {
    private let stored: InferenceSecret
    private let secret = Mutex<[UInt8]?>(nil)
    let http: CurlHTTP.Client
    let tls: CurlHTTP.TLS?

    /// A link over the secret in `store`; `caFile` verifies agents that serve HTTPS.
    public init(store: ResourceStore, caFile: String? = nil) {
        stored = InferenceSecret(store: store)
        http = CurlHTTP.Client(name: "agent-curl", maxConnections: 64)
        tls = caFile.map { CurlHTTP.TLS(caFile: $0) }
    }

    /// Node `node`'s key.
    /// - Throws: ``APIError`` 503 when the secret cannot be read or made.
    func key(node: String) async throws -> [UInt8] {
        AgentRequestSignature.nodeKey(clusterKey: try await clusterKey(), node: node)
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

    private func clusterKey() async throws -> [UInt8] {
        if let known = secret.withLock({ $0 }) { return known }
        let loaded: Data
        do {
            loaded = try await stored.value { Data(SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }) }
        } catch {
            throw APIError(.serviceUnavailable, .unavailable, "cannot read the cluster secret: the store is unavailable; retry")
        }
        let bytes = Array(loaded)
        secret.withLock { $0 = bytes }
        return bytes
    }
}
