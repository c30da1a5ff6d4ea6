import Foundation
import GPUPlaneAgent
import GPUPlaneCore
import GPUPlaneService
import GPUPlaneTestSupport
import Logging
import Testing

/// GPU health through the agent: fake NVML events to Node status and replica messages.
@Suite(.enabled(if: agentTestsAvailable, "needs etcd, and root with podman, runc and busybox-static"))
struct AgentHealthTests {
    @Test func xid79MarksOneGPUUnhealthyAndItsReplicaXid13DoesNot() async throws {
        try await withAgentWorld { world in
            world.startAgent()
            try await world.createReplica("on3", gpus: [3])
            try await world.createReplica("on2", gpus: [2])
            try await world.waitForReplica("on3", "running") { $0.status.phase == .running }
            try await eventually("node reports 8 healthy GPUs") {
                let node = try await world.node()
                return node.status.gpuHealth.count == 8 && node.status.gpuHealth.allSatisfy(\.healthy)
            }
            try world.nvml.inject("xid 2 13")
            try world.nvml.inject("xid 3 79")
            try await eventually("GPU 3 unhealthy in the Node") {
                try await world.node().status.gpuHealth.contains { $0.uuid == world.nvml.uuids[3] && !$0.healthy }
            }
            let node = try await world.node()
            let unhealthy = node.status.gpuHealth.filter { !$0.healthy }
            #expect(unhealthy.map(\.uuid) == [world.nvml.uuids[3]])
            #expect(unhealthy.first?.reason == "Xid79")
            let condition = try #require(node.status.conditions.first { $0.type == "GPUHealthy" })
            #expect(condition.status == false)
            #expect(condition.message?.contains(world.nvml.uuids[3]) == true)

            let on3 = try await world.waitForReplica("on3", "told about its GPU") { $0.status.message?.contains("Xid79") == true }
            #expect(on3.status.message?.contains("GPU 3 (\(world.nvml.uuids[3])) is unhealthy") == true)
            #expect(try await world.replica("on2").status.phase == .running)
        }
    }

    @Test func lostGPUMarksAll() async throws {
        try await withAgentWorld { world in
            let agent = world.startAgent()
            try await eventually("node registered with 8 GPUs", timeout: 60) { try await world.node().status.gpuHealth.count == 8 }  // the suite's first minutes: 90 s was once not enough
            try world.nvml.inject("lost")
            try await eventually("every GPU unhealthy") {
                let health = try await world.node().status.gpuHealth
                return health.count == 8 && health.allSatisfy { !$0.healthy && $0.reason == GPUHealthReason.gpuLost }
            }
            try await eventually("status line says so") { agent.statusLine == "8 GPUs, 0 healthy, 0 containers" }
        }
    }

    @Test func withoutNVMLTheNodeHasNoGPUsAndStillRuns() async throws {
        try await withAgentWorld { world in
            let agent = world.startAgent(nvmlPath: "/nonexistent/libnvidia-ml.so.1")
            try await world.createReplica("cpu", mode: nil, gpus: [])
            try await world.waitForReplica("cpu", "running") { $0.status.phase == .running }
            let node = try await world.node()
            #expect(node.spec.gpus.isEmpty)
            // A CPU node: labelled so, named after the largest CPU machine type it holds.
            #expect(node.metadata.labels[Node.nodeKindLabel] == Node.cpuNodeKind)
            #expect(MachineTypeTable.standard.named(node.spec.machineType)?.family == .cpu)
            #expect(agent.gpus.isEmpty)
            try await eventually("healthy pass") { agent.isHealthy }
        }
    }

    @Test(.enabled(if: JournaldFixture.isAvailable, "needs journald or root to start one"))
    func structuredLogsReachJournald() async throws {
        try await JournaldFixture.shared.ensureRunning()
        let identifier = "gpuplane-test-agent-\(UUID().uuidString.prefix(8).lowercased())"
        let logger = Logger(label: "gpuplane.agent") {
            JournaldLogHandler(label: $0, identifier: identifier, level: .info, fallback: LogLineSink { _ in })
        }
        try await withAgentWorld { world in
            world.startAgent(logger: logger)
            try await world.createReplica("logged", gpus: [0])
            try await world.waitForReplica("logged", "running") { $0.status.phase == .running }
            try world.nvml.inject("xid 6 79")
            var entries: [JournalEntry] = []
            try await eventually("agent entries in journald", timeout: 30) {
                entries = try await JournaldFixture.read(arguments: ["-t", identifier])
                return entries.contains { $0["GPUPLANE_GPU_UUID"] == world.nvml.uuids[6] }
                    && entries.contains { $0["GPUPLANE_REPLICA"] == "\(world.tenant)/app.logged" }
            }
            #expect(entries.allSatisfy { $0["GPUPLANE_NODE"] == world.node }, "\(entries.filter { $0["GPUPLANE_NODE"] != world.node })")
            let started = try #require(entries.first { $0["GPUPLANE_REPLICA"] == "\(world.tenant)/app.logged" && $0["MESSAGE"] == "container started" })
            #expect(started["SYSLOG_IDENTIFIER"] == identifier)
            let gpu = try #require(entries.first { $0["GPUPLANE_GPU_UUID"] == world.nvml.uuids[6] && $0["MESSAGE"] == "GPU unhealthy" })
            #expect(gpu["GPUPLANE_REASON"] == "Xid79")
        }
    }

    @Test func statusLinesReachTheNotifySocket() async throws {
        let listener = try NotifyListener()
        try await withAgentWorld { world in
            world.startAgent(notifier: SystemdNotifier(socketPath: listener.path))
            try await world.createReplica("one", gpus: [0])
            try await eventually("STATUS line", timeout: 90) { listener.received.contains("STATUS=8 GPUs, 8 healthy, 1 containers") }
        }
    }
}

/// A unix datagram socket standing in for systemd's notify socket.
final class NotifyListener: @unchecked Sendable {
    let path: String
    private let fd: Int32
    private let lock = NSLock()
    private var lines: [String] = []

    init() throws {
        let directory = try TestEnvironment.temporaryDirectory(prefix: "notify")
        path = directory.appendingPathComponent("notify.sock").path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else { throw AgentHarnessError(description: "cannot bind \(path)") }
        let thread = Thread { [self] in
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = recv(fd, &buffer, buffer.count, 0)
                if count <= 0 { return }
                let text = String(decoding: buffer[0..<count], as: UTF8.self)
                lock.withLock { lines += text.split(separator: "\n").map(String.init) }
            }
        }
        thread.start()
    }

    var received: [String] { lock.withLock { lines } }
}
