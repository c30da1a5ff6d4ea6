import CSystemd
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

#if canImport(Glibc)
import Glibc
#endif
import GPUPlaneSystem

/// Tells systemd about the daemon's state through the `sd_notify` protocol: `READY=1`,
/// `STATUS=…`, `WATCHDOG=1`, `STOPPING=1` (see `sd_notify(3)`).
///
/// A notifier built from the process environment uses libsystemd's `sd_notify`, which reads
/// `NOTIFY_SOCKET` itself, and does nothing when that variable is unset (not started by
/// systemd, or a unit without `Type=notify`). A notifier given an explicit socket path sends
/// the same datagrams itself, for tests and sandboxes where the path is known.
public struct SystemdNotifier: Sendable {
    enum Transport: Sendable, Equatable {
        case disabled
        case libsystemd
        case datagram(path: String)
    }

    let transport: Transport
    /// The watchdog timeout systemd expects pings within, when the watchdog is on.
    public let watchdogTimeout: Duration?

    /// A notifier for this process as systemd started it: enabled when `NOTIFY_SOCKET` is set,
    /// watchdog timeout from `sd_watchdog_enabled` (`WATCHDOG_USEC`, checked against
    /// `WATCHDOG_PID`).
    public init() {
        let socket = ProcessInfo.processInfo.environment["NOTIFY_SOCKET"]
        self.transport = (socket?.isEmpty ?? true) ? .disabled : .libsystemd
        var usec: UInt64 = 0
        if sd_watchdog_enabled(0, &usec) > 0, usec > 0 {
            self.watchdogTimeout = .microseconds(Int64(clamping: usec))
        } else {
            self.watchdogTimeout = nil
        }
    }

    /// A notifier that sends datagrams to the unix socket at `socketPath` (a leading `@` names
    /// an abstract socket), or does nothing when `socketPath` is nil.
    public init(socketPath: String?, watchdogTimeout: Duration? = nil) {
        if let socketPath, !socketPath.isEmpty {
            self.transport = .datagram(path: socketPath)
        } else {
            self.transport = .disabled
        }
        self.watchdogTimeout = watchdogTimeout
    }

    /// A notifier that never sends anything.
    public static let disabled = SystemdNotifier(socketPath: nil)

    /// Whether notifications go anywhere.
    public var isEnabled: Bool { transport != .disabled }

    /// How often ``WatchdogService`` pings: half the watchdog timeout, as `sd_watchdog_enabled(3)`
    /// recommends. Nil when the watchdog is off.
    public var watchdogInterval: Duration? { watchdogTimeout.map { $0 / 2 } }

    /// One assignment in a notification.
    public enum State: Sendable, Hashable {
        /// `READY=1`: start-up finished.
        case ready
        /// `RELOADING=1`: reloading configuration.
        case reloading
        /// `STOPPING=1`: shutdown began.
        case stopping
        /// `WATCHDOG=1`: still alive.
        case watchdog
        /// `STATUS=…`: one line shown by `systemctl status`. Newlines become spaces.
        case status(String)

        /// The `KEY=value` line.
        public var line: String {
            switch self {
            case .ready: return "READY=1"
            case .reloading: return "RELOADING=1"
            case .stopping: return "STOPPING=1"
            case .watchdog: return "WATCHDOG=1"
            case .status(let text):
                return "STATUS=" + text.replacingAll("\n", with: " ")
            }
        }
    }

    /// Sends `states` as one notification (newline-separated lines). Does nothing when disabled.
    public func notify(_ states: [State]) throws(SystemdNotifyError) {
        guard !states.isEmpty else { return }
        let message = states.map(\.line).joined(separator: "\n")
        switch transport {
        case .disabled:
            return
        case .libsystemd:
            let result = sd_notify(0, message)
            if result < 0 { throw SystemdNotifyError(errno: -result, message: message) }
        case .datagram(let path):
            try NotifyDatagram.send(message, to: path)
        }
    }

    /// `READY=1`, with an optional `STATUS=`.
    public func ready(status: String? = nil) throws(SystemdNotifyError) {
        try notify([.ready] + (status.map { [.status($0)] } ?? []))
    }

    /// `STATUS=text`.
    public func status(_ text: String) throws(SystemdNotifyError) {
        try notify([.status(text)])
    }

    /// `WATCHDOG=1`.
    public func watchdog() throws(SystemdNotifyError) {
        try notify([.watchdog])
    }

    /// `STOPPING=1`, with an optional `STATUS=`.
    public func stopping(status: String? = nil) throws(SystemdNotifyError) {
        try notify([.stopping] + (status.map { [.status($0)] } ?? []))
    }
}

/// A notification could not be delivered.
public struct SystemdNotifyError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The `errno` value reported by `sd_notify` or `sendto`.
    public let errno: Int32
    /// The notification that was not delivered.
    public let message: String

    /// A failure with `errno` while sending `message`.
    public init(errno: Int32, message: String) {
        self.errno = errno
        self.message = message
    }

    /// Human-readable text naming the errno and the first notification line.
    public var description: String {
        let first = message.split(separator: "\n").first.map(String.init) ?? ""
        return "sd_notify failed (\(String(cString: strerror(errno)))) sending \(first)"
    }
}

/// The notify protocol without libsystemd: one `SOCK_DGRAM` datagram to a unix socket.
enum NotifyDatagram {
    static func send(_ message: String, to path: String) throws(SystemdNotifyError) {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemdNotifyError(errno: errno, message: message) }
        defer { close(fd) }

        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var pathBytes = Array(path.utf8)
        let abstract = pathBytes.first == UInt8(ascii: "@")
        if abstract { pathBytes[0] = 0 }
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard pathBytes.count < capacity else {
            throw SystemdNotifyError(errno: ENAMETOOLONG, message: message)
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: pathBytes)
        }
        let length = socklen_t(
            MemoryLayout<sockaddr_un>.offset(of: \.sun_path).map { $0 + pathBytes.count + (abstract ? 0 : 1) }
                ?? MemoryLayout<sockaddr_un>.size)

        let sent = message.utf8CString.withUnsafeBufferPointer { bytes in
            withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                    sendto(fd, bytes.baseAddress, bytes.count - 1, Int32(MSG_NOSIGNAL), socketAddress, length)
                }
            }
        }
        if sent < 0 { throw SystemdNotifyError(errno: errno, message: message) }
    }
}
