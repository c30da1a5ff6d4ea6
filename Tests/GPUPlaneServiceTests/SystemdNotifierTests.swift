import Foundation
import GPUPlaneService
import GPUPlaneTestSupport
import Logging
import ServiceLifecycle
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("sd_notify")
struct SystemdNotifierTests {
    @Test("READY, STATUS, WATCHDOG and STOPPING datagrams arrive in order")
    func datagramsArrive() async throws {
        let socket = try NotifySocket()
        let notifier = SystemdNotifier(socketPath: socket.path)
        #expect(notifier.isEnabled)
        try notifier.ready(status: "serving 3 nodes")
        try notifier.status("leader since term 4\nsecond line")
        try notifier.watchdog()
        try notifier.stopping()
        try await eventually("four notifications") { socket.messages.count >= 4 }
        #expect(
            socket.messages == [
                "READY=1\nSTATUS=serving 3 nodes", "STATUS=leader since term 4 second line", "WATCHDOG=1",
                "STOPPING=1",
            ])
    }

    @Test("an abstract socket name is addressed with a leading @")
    func abstractSocketIsRejectedCleanlyWhenAbsent() {
        let notifier = SystemdNotifier(socketPath: "@gpuplane-test-\(UUID().uuidString)")
        #expect(throws: SystemdNotifyError.self) { try notifier.ready() }
    }

    @Test("a missing socket is a typed error carrying errno")
    func missingSocket() {
        let notifier = SystemdNotifier(socketPath: "/nonexistent/notify.sock")
        #expect(throws: SystemdNotifyError(errno: ENOENT, message: "WATCHDOG=1")) { try notifier.watchdog() }
    }

    @Test("a disabled notifier does nothing")
    func disabled() throws {
        let notifier = SystemdNotifier(socketPath: nil)
        #expect(!notifier.isEnabled)
        #expect(notifier.watchdogInterval == nil)
        try notifier.ready()
        try notifier.stopping()
    }

    @Test("the watchdog interval is half the timeout")
    func watchdogInterval() {
        let notifier = SystemdNotifier(socketPath: "/x", watchdogTimeout: .seconds(10))
        #expect(notifier.watchdogInterval == .seconds(5))
    }

    /// The one test that goes through libsystemd's own `sd_notify` and `sd_watchdog_enabled`,
    /// which read `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the process
    /// environment: it sets them, and removes them again before returning.
    @Test("from the environment, libsystemd's sd_notify delivers to NOTIFY_SOCKET")
    func libsystemdFromEnvironment() async throws {
        let socket = try NotifySocket()
        setenv("NOTIFY_SOCKET", socket.path, 1)
        setenv("WATCHDOG_USEC", "3000000", 1)
        setenv("WATCHDOG_PID", "\(getpid())", 1)
        let notifier = SystemdNotifier()
        unsetenv("WATCHDOG_PID")
        unsetenv("WATCHDOG_USEC")
        defer { unsetenv("NOTIFY_SOCKET") }

        #expect(notifier.isEnabled)
        #expect(notifier.watchdogTimeout == .seconds(3))
        #expect(notifier.watchdogInterval == .milliseconds(1500))
        try notifier.ready(status: "via libsystemd")
        try notifier.watchdog()
        try notifier.stopping()
        try await eventually("three notifications") { socket.messages.count >= 3 }
        #expect(socket.messages == ["READY=1\nSTATUS=via libsystemd", "WATCHDOG=1", "STOPPING=1"])
    }
}

@Suite("watchdog")
struct WatchdogServiceTests {
    @Test("pings only while healthy, and says why when it stops")
    func pingsWhileHealthy() async throws {
        let socket = try NotifySocket()
        let healthy = Flag(true)
        let watchdog = WatchdogService(
            notifier: SystemdNotifier(socketPath: socket.path), interval: .milliseconds(10),
            logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        ) { healthy.get() }
        let task = Task { try await watchdog.run() }
        defer { task.cancel() }

        try await eventually("a watchdog ping") { socket.messages.contains("WATCHDOG=1") }
        healthy.set(false)
        try await eventually("the unhealthy status") {
            socket.messages.contains("STATUS=unhealthy: watchdog pings withheld")
        }
        let checksAtStatus = healthy.readCount
        try await eventually("three more health checks") { healthy.readCount >= checksAtStatus + 3 }
        let messages = socket.messages
        let afterStatus = try #require(messages.lastIndex(of: "STATUS=unhealthy: watchdog pings withheld"))
        #expect(!messages[afterStatus...].contains("WATCHDOG=1"), "pinged while unhealthy: \(messages)")

        healthy.set(true)
        try await eventually("pings to resume") {
            let now = socket.messages
            return now.count > messages.count && now[messages.count...].contains("WATCHDOG=1")
        }
        #expect(socket.messages.contains("STATUS=healthy"))
        task.cancel()
        try await task.value
    }

    @Test("without a watchdog it waits for shutdown and never pings")
    func idleWithoutWatchdog() async throws {
        let socket = try NotifySocket()
        let checked = Flag(true)
        let watchdog = WatchdogService(notifier: SystemdNotifier(socketPath: socket.path)) { checked.get() }
        let group = ServiceGroup(
            services: [watchdog], logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
        let task = Task { try await group.run() }
        await group.triggerGracefulShutdown()
        try await task.value
        #expect(checked.readCount == 0)
        #expect(socket.messages.isEmpty)
    }
}
