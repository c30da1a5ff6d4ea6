#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import GPUPlaneSystem

/// Where the agent gets the registry credentials of a replica's tenant when it must pull the
/// replica's image (the api-server's `GET /v1/replicas/{tenant}/{name}/runtime`,
/// ``ReplicaRuntime/registryCredentials``). Throws when they cannot be had now (the api-server
/// unreachable): the pull then fails and is tried again after its backoff.
public typealias RegistryLoginSource = @Sendable (Replica) async throws -> [RegistryCredential]

/// One pull under way or done, shared by every replica of the node that needs the same image
/// for the same tenant (the credential is the tenant's). Its progress is updated from the
/// engine client's thread.
final class ImagePullJob: Sendable {
    /// The image reference.
    let image: String
    /// Its registry.
    let registry: String
    private let state = Locked(State())

    struct State {
        var secret: String?
        var progress = ContainerEngine.PullProgress()
        var outcome: Result<Void, EngineError>?
        var lastSignal: ContinuousClock.Instant?
    }

    init(image: String) {
        self.image = image
        self.registry = RegistryCredential.registry(ofImage: image)
    }

    /// The secret whose credential the pull uses, once chosen; nil without one.
    var secret: String? {
        get { state.withLock { $0.secret } }
        set { state.withLock { $0.secret = newValue } }
    }
    /// The progress so far.
    var progress: ContainerEngine.PullProgress { state.withLock { $0.progress } }
    /// How it ended; nil while it runs.
    var outcome: Result<Void, EngineError>? { state.withLock { $0.outcome } }

    /// Records progress; returns whether a pass should report it now (at most once per `interval`).
    func record(_ progress: ContainerEngine.PullProgress, interval: Duration, now: ContinuousClock.Instant) -> Bool {
        state.withLock { state in
            state.progress = progress
            if let last = state.lastSignal, now - last < interval { return false }
            state.lastSignal = now
            return true
        }
    }

    func finish(_ outcome: Result<Void, EngineError>) {
        state.withLock { $0.outcome = outcome }
    }

    /// The status message while it runs: "pulling image X from R with the credentials of
    /// secret S (2/3 layers, 12.3/45.6 MB)".
    var runningMessage: String {
        let (progress, secret) = state.withLock { ($0.progress, $0.secret) }
        let login = secret.map { " with the credentials of secret \($0)" } ?? ""
        let how = progress.layers > 0 ? " (\(progress))" : ""
        return "pulling image \(image) from \(registry)\(login)\(how)"
    }

    /// The words of its failure (see ``ImagePullState/describe(_:image:registry:secret:)``).
    func failureMessage(_ error: EngineError) -> String {
        ImagePullState.describe(error, image: image, registry: registry, secret: secret)
    }
}

/// What the reconciler remembers of one replica's image pulls: the pull it waits on, and the
/// failures so far with their backoff (like a crash loop's: it doubles up to a cap and starts
/// over once a pull succeeded).
struct ImagePullState {
    /// The pull it waits on.
    var job: ImagePullJob?
    /// Failed pulls in a row.
    var failures = 0
    /// The pause after the next failure.
    var backoff: Duration?
    /// When the next pull may start, after a failure.
    var retryAt: ContinuousClock.Instant?
    /// The last failure, in words.
    var failure: String?
    /// The pause after the last failure.
    var pause: Duration = .zero
    /// Whether the last failure was reported as `ErrImagePull` already (then it shows as `ImagePullBackOff`).
    var failureShown = false

    /// The words of a failed pull: what went wrong, naming the image, the registry and the
    /// secret, never the credential.
    static func describe(_ error: EngineError, image: String, registry: String, secret: String?) -> String {
        switch error.code {
        case .imageNotFound:
            return "image \(image) not found in registry \(registry)"
        case .registryUnauthorized:
            if let secret { return "registry \(registry) refused the credentials of secret \(secret) for image \(image)" }
            return "no credentials for registry \(registry): it refused to serve image \(image) without them (create a registry secret for \(registry))"
        case .timeout:
            return "pulling image \(image) from \(registry) did not finish in time"
        case .unavailable, .cancelled:
            return "the container engine could not be reached to pull image \(image): \(error.message)"
        default:
            return "pulling image \(image) from \(registry) failed: \(error.message)"
        }
    }
}
