import Logging
import ServiceLifecycle
import GPUPlaneSystem

/// Tracks which components of a daemon have finished starting, so that `READY=1` is sent only
/// when all have.
///
/// Declare the components up front; each calls ``markReady(_:)`` once it can serve (the HTTP
/// listener bound, the etcd watch established). ``waitUntilReady()`` returns when every
/// component is ready. Marking a component twice, or one not declared, is harmless.
public final class ReadinessTracker: Sendable {
    private struct State {
        var pending: Set<String>
        var nextWaiter = 0
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
    }

    private let state: Locked<State>

    /// A tracker waiting for `components`; with none, it is ready at once.
    public init(components: Set<String>) {
        self.state = Locked(State(pending: components))
    }

    /// Components not yet ready.
    public var pending: Set<String> { state.withLock { $0.pending } }

    /// Whether every component is ready.
    public var isReady: Bool { pending.isEmpty }

    /// Marks `component` ready; wakes the waiters when it was the last one.
    public func markReady(_ component: String) {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.pending.remove(component)
            guard state.pending.isEmpty else { return [] }
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns once every component is ready, or as soon as the calling task is cancelled
    /// (check ``isReady`` afterwards).
    public func waitUntilReady() async {
        let id = state.withLock { state -> Int in
            defer { state.nextWaiter += 1 }
            return state.nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { state -> Bool in
                    if state.pending.isEmpty || Task.isCancelled { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.resume()
        }
    }
}

/// Runs a daemon's services in a `ServiceGroup` with the systemd protocol around them:
/// graceful shutdown on SIGTERM and SIGINT, `READY=1` once ``ReadinessTracker`` says every
/// component is ready, and `STOPPING=1` as soon as shutdown begins.
///
/// Services start in the order given and stop in reverse. The notifications come from one
/// more service appended last, so it is the first told about shutdown: `STOPPING=1` goes out
/// before any real service starts to wind down.
///
/// ```swift
/// let daemon = Daemon(services: [store, api, watchdog], readiness: readiness, logger: logger)
/// try await daemon.run()
/// ```
public struct Daemon: Sendable {
    /// The group running the services and the notification service.
    public let group: ServiceGroup
    /// Where `READY=1` and `STOPPING=1` go.
    public let notifier: SystemdNotifier

    /// A daemon running `services`.
    ///
    /// - Parameters:
    ///   - services: the daemon's services, in start order.
    ///   - readiness: decides when `READY=1` is sent; nil sends it as soon as the group runs.
    ///   - notifier: the systemd notifier; the default reads `NOTIFY_SOCKET`.
    ///   - readyStatus: the `STATUS=` sent with `READY=1`.
    ///   - handlesSignals: whether SIGTERM and SIGINT start graceful shutdown (the group then
    ///     ignores their default action); tests pass false and call ``triggerGracefulShutdown()``.
    ///   - shutdownGrace: how long graceful shutdown may take before what still runs is
    ///     cancelled; nil waits for every service however long it takes.
    ///   - logger: the group's logger.
    public init(
        services: [any Service], readiness: ReadinessTracker? = nil,
        notifier: SystemdNotifier = SystemdNotifier(), readyStatus: String = "running",
        handlesSignals: Bool = true, shutdownGrace: Duration? = nil, logger: Logger
    ) {
        let notification = NotificationService(
            readiness: readiness ?? ReadinessTracker(components: []), notifier: notifier,
            readyStatus: readyStatus, logger: logger)
        self.notifier = notifier
        var configuration = ServiceGroupConfiguration(
            services: services.map { ServiceGroupConfiguration.ServiceConfiguration(service: $0) }
                + [
                    .init(
                        service: notification, successTerminationBehavior: .ignore,
                        serviceName: "systemd-notify")
                ],
            gracefulShutdownSignals: handlesSignals ? [.sigterm, .sigint] : [], logger: logger)
        configuration.maximumGracefulShutdownDuration = shutdownGrace
        self.group = ServiceGroup(configuration: configuration)
    }

    /// Runs until every service has stopped; rethrows the first service failure.
    public func run() async throws {
        try await group.run()
    }

    /// Starts graceful shutdown as SIGTERM would.
    public func triggerGracefulShutdown() async {
        await group.triggerGracefulShutdown()
    }
}

/// Sends `READY=1` when the tracker is ready and `STOPPING=1` when shutdown begins.
struct NotificationService: Service {
    let readiness: ReadinessTracker
    let notifier: SystemdNotifier
    let readyStatus: String
    let logger: Logger

    func run() async throws {
        let becameReady = await cancelWhenGracefulShutdown { [readiness] in
            await readiness.waitUntilReady()
            return readiness.isReady
        }
        if becameReady && !Task.isShuttingDownGracefully {
            send { () throws(SystemdNotifyError) in try notifier.ready(status: readyStatus) }
            logger.info("ready")
            try? await gracefulShutdown()
        }
        send { () throws(SystemdNotifyError) in try notifier.stopping(status: "shutting down") }
        logger.info("shutting down")
    }

    private func send(_ notification: () throws(SystemdNotifyError) -> Void) {
        do {
            try notification()
        } catch {
            logger.warning("sd_notify failed", metadata: ["error": "\(error)"])
        }
    }
}
