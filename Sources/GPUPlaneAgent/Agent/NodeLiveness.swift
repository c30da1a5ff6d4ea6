#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import Logging

/// How a node-agent stays known to the api-server: registration retried until it succeeds, and
/// the heartbeat loop that registers again when the api-server forgot the node. ``NodeAgent``
/// runs these for its host; ``HollowFleet`` runs the same code for each simulated node.
public struct NodeLiveness: Sendable {
    /// The api-server client (its token speaks for ``nodeName``).
    public let api: NodeAPI.Client
    /// The node.
    public let nodeName: String
    /// How often the heartbeat is sent.
    public let heartbeatInterval: Duration
    /// Where registration and heartbeat trouble is logged.
    public let logger: Logger

    /// Makes the liveness of `nodeName`.
    public init(api: NodeAPI.Client, nodeName: String, heartbeatInterval: Duration, logger: Logger) {
        self.api = api
        self.nodeName = nodeName
        self.heartbeatInterval = heartbeatInterval
        self.logger = logger
    }

    /// Registers `registration()`, retrying with doubling pauses (200 ms to 5 s); the stored
    /// Node, or nil when cancelled first.
    public func register(_ registration: @Sendable () -> NodeRegistration) async -> Node? {
        var backoff = Duration.milliseconds(200)
        var failures = 0
        while !Task.isCancelled {
            do {
                return try await api.register(registration())
            } catch {
                if error.code == .cancelled { return nil }
                failures += 1
                if failures == 1 || failures % 20 == 0 {
                    logger.warning("cannot register the node; retrying", metadata: ["error": "\(error)", "attempts": "\(failures)"])
                }
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(5))
            }
        }
        return nil
    }

    /// Beats every ``heartbeatInterval`` until cancelled; when the api-server answers 404 (it
    /// does not know the node), calls `reregister` before the next beat.
    public func heartbeatLoop(reregister: @Sendable () async -> Void) async {
        var failing = false
        while !Task.isCancelled {
            do {
                try await api.heartbeat(node: nodeName)
                if failing { logger.notice("heartbeats answered again") }
                failing = false
            } catch where error.code == .notFound {
                logger.warning("the api-server does not know this node; registering again")
                await reregister()
            } catch {
                if error.code == .cancelled { return }
                if !failing { logger.warning("heartbeat failed", metadata: ["error": "\(error)"]) }
                failing = true
            }
            try? await Task.sleep(for: heartbeatInterval)
        }
    }
}
