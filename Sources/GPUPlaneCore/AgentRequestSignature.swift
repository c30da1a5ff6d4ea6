import GPUPlaneSystem

/// How the api-server signs the requests it makes to a node-agent's listener (container logs),
/// and how the agent checks them.
///
/// Each node has its own key (``AgentRequestSignature/nodeKey(clusterKey:node:)``): the
/// api-server derives it from the cluster's secret, the agent fetches its own from
/// `GET /v1/nodes/{name}/agent-key` with its node token. A request carries
/// `Authorization: GPUPlane-Agent v1:<expires>:<hex HMAC-SHA256>` over the method, the request
/// target (path and query exactly as sent) and the expiry (Unix seconds). The expiry is on the
/// api-server's clock and checked on the agent's, which may be off by up to ``clockSkew``
/// either way: an agent refuses a request whose expiry passed more than ``clockSkew`` ago on
/// its clock or lies more than ``maximumLifetime`` ahead, so a captured request is worthless
/// three minutes later at most, and a key opens one node only.
public enum AgentRequestSignature {
    /// The `Authorization` scheme.
    public static let scheme = "GPUPlane-Agent"
    /// How long a signature the api-server makes stays valid, seconds.
    public static let lifetime: Int64 = 60
    /// How far a node's clock may be from the api-server's, either way, seconds. A node whose
    /// clock runs ahead saw every signature expired before this allowance (its logs could not
    /// be read); one behind needs it for the expiry not to lie too far ahead.
    public static let clockSkew: Int64 = 120
    /// The furthest ahead an agent accepts an expiry (the lifetime plus clock skew), seconds.
    public static let maximumLifetime: Int64 = lifetime + clockSkew

    /// Why an agent refused a request.
    public enum Refusal: Error, Sendable, Hashable {
        /// No `Authorization` header, or not this scheme.
        case missing
        /// The header's value is not `v1:<expires>:<64 hex digits>`.
        case malformed
        /// The expiry has passed, or lies too far ahead.
        case expired
        /// The MAC does not match: another key, another request, or altered.
        case badSignature
    }

    /// Node `node`'s key under the cluster's key (the api-servers' shared secret).
    public static func nodeKey(clusterKey: [UInt8], node: String) -> [UInt8] {
        let purpose = PortableSHA256.hmac(key: clusterKey, message: Array("gpuplane agent keys v1".utf8))
        return PortableSHA256.hmac(key: purpose, message: Array(node.utf8))
    }

    /// The `Authorization` value for `method target`, valid until `expires` (Unix seconds).
    public static func authorization(key: [UInt8], method: String, target: String, expires: Int64) -> String {
        "\(scheme) v1:\(expires):\(PortableSHA256.hex(mac(key: key, method: method, target: target, expires: expires)))"
    }

    /// Checks `authorization` for `method target` at `now` (Unix seconds).
    /// - Throws: the ``Refusal``.
    public static func verify(
        _ authorization: String?, key: [UInt8], method: String, target: String, now: Int64
    ) throws(Refusal) {
        guard let authorization, authorization.hasPrefix(scheme + " ") else { throw .missing }
        let fields = authorization.dropFirst(scheme.count + 1).split(separator: ":", omittingEmptySubsequences: false)
        guard fields.count == 3, fields[0] == "v1", let expires = Int64(fields[1]), fields[2].utf8.count == 64,
            let given = PortableSHA256.bytes(hex: String(fields[2]))
        else { throw .malformed }
        guard expires >= now - clockSkew, expires - now <= maximumLifetime else { throw .expired }
        guard PortableSHA256.constantTimeEqual(given, mac(key: key, method: method, target: target, expires: expires)) else {
            throw .badSignature
        }
    }

    private static func mac(key: [UInt8], method: String, target: String, expires: Int64) -> [UInt8] {
        PortableSHA256.hmac(key: key, message: Array("v1\n\(method)\n\(target)\n\(expires)".utf8))
    }
}
