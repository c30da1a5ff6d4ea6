import Logging
import ServiceLifecycle

/// Pings the systemd watchdog (`WATCHDOG=1`) every ``SystemdNotifier/watchdogInterval`` while
/// `isHealthy` says so.
///
/// When the check fails the pings stop, so systemd kills and restarts a daemon that is alive
/// but stuck, and `STATUS=` says why; the pings resume if health comes back before the
/// timeout. When the watchdog is off (no `WATCHDOG_USEC`) or the notifier is disabled, the
/// service just waits for shutdown. It ends on graceful shutdown or cancellation.
public struct WatchdogService: Service {
    /// Where pings go.
    public let notifier: SystemdNotifier
    /// Time between health checks; defaults to the notifier's watchdog interval.
    public let interval: Duration?
    private let isHealthy: @Sendable () async -> Bool
    private let logger: Logger

    /// A watchdog pinging through `notifier` while `isHealthy` returns true.
    ///
    /// - Parameters:
    ///   - notifier: the notifier; its ``SystemdNotifier/watchdogInterval`` is the default interval.
    ///   - interval: overrides the interval (tests, or pinging more often than half the timeout).
    ///   - logger: receives a warning when health is lost and a notice when it returns.
    ///   - isHealthy: asked before every ping.
    public init(
        notifier: SystemdNotifier, interval: Duration? = nil,
        logger: Logger = Logger(label: "gpuplane.watchdog"),
        isHealthy: @escaping @Sendable () async -> Bool
    ) {
        self.notifier = notifier
        self.interval = interval ?? notifier.watchdogInterval
        self.logger = logger
        self.isHealthy = isHealthy
    }

    /// Runs until graceful shutdown or cancellation.
    public func run() async throws {
        guard notifier.isEnabled, let interval, interval > .zero else {
            try? await gracefulShutdown()
            return
        }
        var healthy = true
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let now = await isHealthy()
            if now {
                try? notifier.watchdog()
                if !healthy {
                    logger.notice("health restored; watchdog pings resumed")
                    try? notifier.status("healthy")
                }
            } else if healthy {
                logger.warning("health check failed; watchdog pings withheld")
                try? notifier.status("unhealthy: watchdog pings withheld")
            }
            healthy = now
            do {
                try await cancelWhenGracefulShutdown {
                    try await Task.sleep(for: interval)
                }
            } catch {
                return
            }
        }
    }
}
