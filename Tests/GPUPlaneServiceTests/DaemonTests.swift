import GPUPlaneService
import GPUPlaneTestSupport
import Logging
import ServiceLifecycle
import Testing

/// A service that does nothing until shutdown.
struct IdleService: Service {
    func run() async throws { try? await gracefulShutdown() }
}

@Suite("daemon lifecycle")
struct DaemonTests {
    let quiet = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }

    @Test("READY=1 waits for every component; STOPPING=1 comes when shutdown starts")
    func readyThenStopping() async throws {
        let socket = try NotifySocket()
        let readiness = ReadinessTracker(components: ["store", "api"])
        let daemon = Daemon(
            services: [IdleService()], readiness: readiness,
            notifier: SystemdNotifier(socketPath: socket.path), readyStatus: "serving",
            handlesSignals: false, logger: quiet)
        let run = Task { try await daemon.run() }

        readiness.markReady("store")
        #expect(readiness.pending == ["api"])
        #expect(!socket.messages.contains { $0.hasPrefix("READY=1") })
        readiness.markReady("api")
        try await eventually("READY=1", timeout: 120) { socket.messages.contains("READY=1\nSTATUS=serving") }

        await daemon.triggerGracefulShutdown()
        try await run.value
        #expect(socket.messages == ["READY=1\nSTATUS=serving", "STOPPING=1\nSTATUS=shutting down"])
    }

    @Test("shutdown before readiness sends STOPPING=1 and no READY=1")
    func stopBeforeReady() async throws {
        let socket = try NotifySocket()
        let readiness = ReadinessTracker(components: ["never"])
        let daemon = Daemon(
            services: [IdleService()], readiness: readiness,
            notifier: SystemdNotifier(socketPath: socket.path), handlesSignals: false, logger: quiet)
        let run = Task { try await daemon.run() }
        await daemon.triggerGracefulShutdown()
        try await run.value
        #expect(socket.messages == ["STOPPING=1\nSTATUS=shutting down"])
    }

    @Test("a tracker without components is ready at once")
    func emptyTracker() async {
        let readiness = ReadinessTracker(components: [])
        #expect(readiness.isReady)
        await readiness.waitUntilReady()
    }
}
