#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore

/// A replica's secret vars on their way into its container: asked of the api-server
/// (``NodeAPI/Client/runtime(of:)``) just before the container is created, added to the engine
/// spec's environment, and dropped. Their values go nowhere else: not into ``ContainerPlan``
/// (so never into its spec hash or a label), not into a status, event or log line.
///
/// How a changed value reaches a running container: the api-server stamps the secret's new
/// ``Secret/Spec/version`` on every replica that references it (``Replica/secretVersions``) in
/// the transaction that writes the secret; ``ContainerPlan`` hashes the references and those
/// versions (never the values), so the replica's watch event changes the spec hash and the
/// reconciler replaces the container, which is created with the new values. A deleted secret
/// leaves running containers as they are; one that must start again waits for it.
enum SecretEnvironment {
    /// Why the values could not be had; its message names vars and secrets, never a value.
    struct Failure: Error {
        var message: String
    }

    /// Whether `replica` has secret vars.
    static func needed(_ replica: Replica) -> Bool { !(replica.spec.secretEnv ?? [:]).isEmpty }

    /// The values of `replica`'s secret vars, from the api-server.
    static func values(for replica: Replica, api: NodeAPI.Client) async -> Result<[String: String], Failure> {
        do {
            let runtime = try await api.runtime(of: replica)
            let missing = (replica.spec.secretEnv ?? [:]).keys.filter { runtime.env[$0] == nil }.sorted()
            guard missing.isEmpty else {
                return .failure(Failure(message: "the api-server gave no value for the secret vars \(missing.joined(separator: ", "))"))
            }
            return .success(runtime.env)
        } catch {
            let reason: String
            switch error.code {
            case .conflict, .notFound: reason = error.message
            case .unavailable where error.httpStatus == 503: reason = error.message
            default: reason = "cannot get the secret vars from the api-server: \(error.message)"
            }
            return .failure(Failure(message: reason))
        }
    }

    /// `values` added to `spec`'s environment; a variable the spec sets already (the `NXL_*`
    /// contract) keeps its value.
    static func add(_ values: [String: String], to spec: inout ContainerEngine.ContainerSpec) {
        for (name, value) in values where spec.environment[name] == nil { spec.environment[name] = value }
    }

    /// The text ``ContainerPlan`` hashes for `replica`'s secret vars: each var's secret, key
    /// and the secret's version as last stamped; empty when it has none.
    static func hashText(_ replica: Replica) -> String {
        let versions = replica.secretVersions ?? [:]
        return (replica.spec.secretEnv ?? [:]).sorted { $0.key < $1.key }.map { name, reference in
            "\(name)=\(reference.secret)/\(reference.key ?? "-")@\(versions[reference.secret] ?? "-")"
        }.joined(separator: "\u{1}")
    }
}
