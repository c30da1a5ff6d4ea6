#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore

extension NodeAPI.Client {
    /// What the node needs to start replica `name` of `tenant` beyond the replica itself: its
    /// secret vars' values and its tenant's registry logins (``ReplicaRuntime``). Only for a
    /// replica bound to this node. Call it when about to create the container and keep the
    /// answer no longer than that: never log, label or report what it holds.
    /// Maps to `GET /v1/replicas/{tenant}/{name}/runtime`.
    /// - Throws: ``NodeAPIError/Code/conflict`` when a secret (or key) one of its vars
    ///   references does not exist (the message names the var and secret);
    ///   ``NodeAPIError/Code/notFound`` when the replica is gone or bound elsewhere;
    ///   ``NodeAPIError/Code/unavailable`` when the api-server has no secret-key-file (503) or
    ///   cannot be reached.
    public func runtime(tenant: String, name: String) async throws(NodeAPIError) -> ReplicaRuntime {
        let path = "/v1/replicas/\(Self.segment(tenant))/\(Self.segment(name))/runtime"
        let response = try await send(.get, path)
        do {
            return try GPUPlaneJSON.decode(ReplicaRuntime.self, from: response.body)
        } catch {
            // Unlike other answers', this body is never kept in the error: it holds values.
            throw NodeAPIError(code: .decoding, message: "the runtime answer is not a ReplicaRuntime", httpStatus: response.status, path: path)
        }
    }

    /// ``runtime(tenant:name:)`` of `replica`.
    public func runtime(of replica: Replica) async throws(NodeAPIError) -> ReplicaRuntime {
        try await runtime(tenant: replica.metadata.tenant, name: replica.metadata.name)
    }
}
