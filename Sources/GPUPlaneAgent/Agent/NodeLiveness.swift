#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CurlHTTP
import GPUPlaneCore
import GPUPlaneSystem
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

    /// The pauses between registrations that failed: doubling from 200 ms to 5 s, each drawn
    /// from half to all of it, so a fleet whose registrations all failed at once (a store that
    /// stalled) does not come back in one wave.
    public static let registrationRetry = CurlHTTP.RetryPolicy(
        attempts: .max, firstDelay: .milliseconds(200), maxDelay: .seconds(5), jitter: NodeAPI.Configuration.retryJitter)

    /// Registers `registration()`, retrying with ``registrationRetry``'s pauses; the stored
    /// Node, or nil when cancelled first.
    public func register(_ registration: @Sendable () -> NodeRegistration) async -> Node? {
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
                try? await Task.sleep(for: Self.registrationRetry.delay(after: failures - 1))
            }
        }
        return nil
    }

    /// Beats every ``heartbeatInterval`` until cancelled; when the api-server answers 404 (it
    /// does not know the node), calls `reregister` before the next beat.
    ///
    /// Beats start one interval apart, counted from each beat's start, not from its answer:
    /// were the pause counted from the answer, a busy api-server taking two seconds to answer
    /// would see this node's beats three seconds apart, past its `silent-after`, and mark a live
    /// node silent. A beat answered later than an interval is followed by the next at once; one
    /// beat is in flight at a time.
    ///
    /// Each answered beat's round trip goes to `gpuplane_agent_heartbeat_seconds` and to
    /// `answered` when given (the hollow nodes' journal).
    public func heartbeatLoop(answered: (@Sendable (Duration) -> Void)? = nil, reregister: @Sendable () async -> Void) async {
        await Self.beating(
            every: heartbeatInterval, now: { ContinuousClock.now }, sleep: { try? await Task.sleep(until: $0) },
            beat: { () async throws(NodeAPIError) in _ = try await api.heartbeat(node: nodeName) }, reregister: reregister,
            answered: { latency in
                AgentMetrics.heartbeatSeconds.recordNanoseconds(latency.wholeNanoseconds)
                answered?(latency)
            }, logger: logger)
    }

    /// ``heartbeatLoop(reregister:)`` on a clock of the caller's (`now`, and `sleep` until an
    /// instant), beating with `beat`; `answered` gets each answered beat's round trip
    /// (`gpuplane_agent_heartbeat_seconds`).
    static func beating(
        every interval: Duration, now: () -> ContinuousClock.Instant, sleep: (ContinuousClock.Instant) async -> Void,
        beat: () async throws(NodeAPIError) -> Void, reregister: () async -> Void,
        answered: (Duration) -> Void = { _ in }, logger: Logger
    ) async {
        var failing = false
        while !Task.isCancelled {
            let started = now()
            do {
                try await beat()
                answered(now() - started)
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
            let next = started + interval
            if next > now() { await sleep(next) }
        }
    }
}
