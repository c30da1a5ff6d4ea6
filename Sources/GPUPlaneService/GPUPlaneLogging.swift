import Logging
import GPUPlaneSystem

/// Process-wide logging setup for the gpuplane daemons.
public enum GPUPlaneLogging {
    /// Where log entries go.
    public enum Destination: String, Sendable, CaseIterable {
        /// journald when its socket exists, stderr otherwise.
        case automatic
        /// Always journald (with the per-entry stderr fallback of ``JournaldLogHandler``).
        case journald
        /// Always text lines on stderr.
        case stderr
    }

    private static let bootstrapped = Locked(false)

    /// Bootstraps swift-log once per process; later calls return `false` and change nothing
    /// (swift-log itself traps on a second bootstrap).
    ///
    /// - Parameters:
    ///   - identifier: the `SYSLOG_IDENTIFIER`, e.g. `gpuplane-scheduler`.
    ///   - level: the lowest level written by every logger.
    ///   - destination: journald, stderr, or ``Destination/automatic``.
    ///   - socketPath: the journal socket whose presence ``Destination/automatic`` checks.
    /// - Returns: whether this call performed the bootstrap.
    @discardableResult
    public static func bootstrap(
        identifier: String, level: Logger.Level = .info, destination: Destination = .automatic,
        socketPath: String = JournaldLogHandler.defaultSocketPath
    ) -> Bool {
        let first = bootstrapped.withLock { done -> Bool in
            defer { done = true }
            return !done
        }
        guard first else { return false }
        let resolved = resolve(destination, socketPath: socketPath)
        LoggingSystem.bootstrap { label in
            makeHandler(
                label: label, identifier: identifier, level: level, destination: resolved,
                socketPath: socketPath)
        }
        return true
    }

    /// The destination ``Destination/automatic`` stands for right now: journald when
    /// `socketPath` is a socket, stderr otherwise. Other destinations are returned as they are.
    public static func resolve(
        _ destination: Destination, socketPath: String = JournaldLogHandler.defaultSocketPath
    ) -> Destination {
        guard destination == .automatic else { return destination }
        return JournalSocket.isAvailable(at: socketPath) ? .journald : .stderr
    }

    /// The handler ``bootstrap(identifier:level:destination:socketPath:)`` installs, for code
    /// that builds loggers by hand (tests, tools that must not bootstrap globally).
    public static func makeHandler(
        label: String, identifier: String, level: Logger.Level = .info,
        destination: Destination = .automatic,
        socketPath: String = JournaldLogHandler.defaultSocketPath
    ) -> any LogHandler {
        switch resolve(destination, socketPath: socketPath) {
        case .journald, .automatic:
            return JournaldLogHandler(
                label: label, identifier: identifier, level: level, socketPath: socketPath)
        case .stderr:
            return StderrLogHandler(label: label, level: level)
        }
    }
}
