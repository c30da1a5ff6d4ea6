import ArgumentParser
import CurlHTTP
import EtcdClient
import Foundation
import GPUPlaneAPI
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneTestSupport
import Logging
import GPUPlaneSystem


/// `gpuplane-bench agent`: the node-agent's idle footprint with 8 fake GPUs and 20 containers.
struct AgentBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Starts etcd, an api-server, podman and gpuplane-node-agent (8 fake GPUs, 20 containers); measures the agent's idle RSS and CPU.")

    /// The podman fixture, kept until the process exits.
    static let keepAlive = Locked<PodmanFixture?>(nil)

    @Option(help: "Containers bound to the node: one a GPU, the rest without a GPU (a dedicated GPU is one container's).")
    var containers = 20

    @Option(help: "Fake GPUs.")
    var gpus = 8

    @Option(help: "Seconds of idle CPU measurement.")
    var seconds = 10.0

    @Option(help: "Seconds to let the agent settle after every container runs.")
    var settle = 5.0

    @Option(help: "A program to start the agent through, given the agent's path and arguments (scripts/symbol-order runs it under valgrind).")
    var wrapper: String?

    func run() async throws {
        let binDirectory = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        let agentPath = binDirectory.appendingPathComponent("gpuplane-node-agent").path
        guard FileManager.default.fileExists(atPath: agentPath) else {
            throw ValidationError("\(agentPath) is missing; swift build the gpuplane-node-agent product in the same configuration")
        }

        let etcdFixture = try await EtcdFixture.start()
        defer { etcdFixture.shutdown() }
        let etcd = try Etcd.Client(Etcd.Configuration(endpoints: etcdFixture.endpoints, requestTimeout: .seconds(10)))
        let admin = Tokens.generate()
        let quiet = Logger(label: "gpuplane.api") { _ in SwiftLogNoOpLogHandler() }
        let deps = APIDependencies(store: ResourceStore(client: etcd), catalog: try Catalog.standard(), adminTokens: [admin], logger: quiet)
        let server = try await startAPIServer(deps)
        defer { server.task.cancel() }
        let base = server.base
        let session = CurlHTTP.Client(name: "agent-bench", maxConnections: 4)
        defer { session.shutdown() }
        try await eventually("api-server answers") { try await APIBench.call(session, "GET", base + "/healthz").0 == 200 }
        let podman = try await PodmanFixture.start()
        // Cleaned up by the fixture's exit handler (containers, storage, service): its
        // shutdown(), which waits on the service with Foundation's Process.waitUntilExit, can
        // spin forever when called from a task, so the fixture is kept alive until exit.
        AgentBench.keepAlive.withLock { $0 = podman }

        let node = "bench-node"
        let (status, body) = try await APIBench.call(
            session, "POST", base + "/v1/tokens", token: admin, body: #"{"role": "node", "node": "\#(node)"}"#)
        guard status == 201, let token = (try JSONSerialization.jsonObject(with: body) as? [String: Any])?["token"] as? String else {
            throw ValidationError("could not issue a node token: \(status)")
        }
        let folder = try TestEnvironment.temporaryDirectory(prefix: "agent-bench")
        defer { try? FileManager.default.removeItem(at: folder) }
        let fakeNVML = try Self.buildFakeNVML(into: folder)
        let tokenFile = folder.appendingPathComponent("node.token")
        try token.write(to: tokenFile, atomically: true, encoding: .utf8)
        let gpuConfig = folder.appendingPathComponent("gpus.conf")
        let events = folder.appendingPathComponent("events")
        try ((["driver 550.54.15"] + (0..<gpus).map { index in
            "gpu index=\(index) uuid=GPU-bench-\(index) name=\"NVIDIA H100 80GB HBM3\" memory_mib=81559 temp=40 power_mw=70000"
        }).joined(separator: "\n") + "\n").write(to: gpuConfig, atomically: true, encoding: .utf8)
        try Data().write(to: events)
        let configFile = folder.appendingPathComponent("node-agent.conf")
        try """
            api-server = \(base)
            node-token-file = \(tokenFile.path)
            node-name = \(node)
            gpu-mode = dedicated
            engine-socket = \(podman.socketPath)
            cdi-gpu-kind = \(podman.cdiKind)
            nvml-library = \(fakeNVML)
            gateway-url = http://gateway.bench:8081
            log-level = warning

            """.write(to: configFile, atomically: true, encoding: .utf8)
        let agent = try ChildProcess(
            executable: wrapper ?? agentPath, arguments: (wrapper == nil ? [] : [agentPath]) + ["--config", configFile.path],
            environment: [
                "GPUPLANE_FAKE_NVML_CONFIG": gpuConfig.path, "GPUPLANE_FAKE_NVML_EVENTS": events.path, "NOTIFY_SOCKET": "",
            ],
            logFile: folder.appendingPathComponent("agent.log"))
        defer { agent.stop() }
        say("agent pid \(agent.pid), log \(folder.appendingPathComponent("agent.log").path)")
        try await eventually("node registered", timeout: 60) {
            (try? await deps.store.get(Node.self, tenant: ObjectMeta.clusterTenant, name: node)) != nil
        }

        // The agent starts a container on a dedicated GPU only once no other container holds it,
        // so the first `gpus` containers get one GPU each and the rest none.
        for index in 0..<containers {
            let gpuIndices = index < gpus ? [index] : []
            let spec = ReplicaSpec(
                owner: OwnerReference(kind: .application, name: "bench", uid: "bench"), role: "r\(index)", mode: .dedicated,
                modelSlug: nil, gpus: gpuIndices.count, vramGB: 0, machineTypes: [], priority: .inference, image: podman.testImage,
                command: ["sleep", "1000000"])
            _ = try await deps.store.create(
                Replica(
                    metadata: ObjectMeta(name: "bench.r\(index)", tenant: "bench"), spec: spec,
                    binding: Binding(node: node, gpuIndices: gpuIndices)))
        }
        let clock = ContinuousClock()
        let startedAt = clock.now
        try await eventually("\(containers) containers running", timeout: 300, every: 0.2) {
            let replicas = try await deps.store.list(Replica.self, tenant: "bench").items
            return replicas.filter { $0.status.phase == .running }.count == containers
        }
        let startup = clock.now - startedAt
        try await Task.sleep(for: .seconds(settle))
        guard agent.isRunning else { throw ValidationError("the agent exited: \(agent.logTail())") }

        let pid = agent.pid
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let cpu0 = try Self.cpuTicks(pid)
        let threads0 = Self.threadTicks(pid)
        let t0 = clock.now
        var rssSamples: [Double] = []
        while clock.now - t0 < .seconds(seconds) {
            rssSamples.append(try Self.rssMiB(pid))
            try await Task.sleep(for: .seconds(1))
        }
        let cpu1 = try Self.cpuTicks(pid)
        let threads1 = Self.threadTicks(pid)
        let wall = (clock.now - t0).seconds
        let cpuPercent = (cpu1 - cpu0) / ticks / wall * 100
        let rss = rssSamples.max() ?? 0
        let hwm = try Self.statusField(pid, "VmHWM:") / 1024
        let anon = try Self.statusField(pid, "RssAnon:") / 1024
        let file = try Self.statusField(pid, "RssFile:") / 1024
        say("node-agent (pid \(pid)): \(gpus) fake GPUs, \(containers) containers (\(min(gpus, containers)) with a GPU), all running after \(startup)")
        say(String(format: "idle RSS      %6.1f MB  (VmRSS max over %.0f s; peak VmHWM %.1f MB)   goal < 25 MB   ", rss, wall, hwm) + (rss < 25 ? "met" : "NOT met"))
        say(String(format: "  of which     %6.1f MB anonymous (heap, stacks) and %.1f MB file-backed (binary and shared libraries)", anon, file))
        say(String(format: "idle CPU      %6.2f %% of a core over %.1f s                        goal < 1 %%     ", cpuPercent, wall) + (cpuPercent < 1 ? "met" : "NOT met"))
        // Where the CPU went, by thread name (the fake NVML polls its events file every 10 ms
        // inside nvmlEventSetWait_v2, which real NVML does in the kernel).
        var byName: [String: Double] = [:]
        for (tid, (name, ticks)) in threads1 {
            byName[name, default: 0] += ticks - (threads0[tid]?.1 ?? 0)
        }
        for (name, ticks) in byName.sorted(by: { $0.value > $1.value }).prefix(6) where ticks > 0 {
            say("  thread \(name.padding(toLength: 16, withPad: " ", startingAt: 0))" + String(format: "%5.2f %% of a core", ticks / self.ticks / wall * 100))
        }
        // Where the resident pages are, by mapping (binary, each shared library, heap, stacks).
        say("resident by mapping (Rss, of which anonymous):")
        for (name, rss, anon) in Self.residentByMapping(pid).prefix(40) where rss >= 0.1 * 1024 {
            say(String(format: "  %7.2f MB %7.2f MB  ", rss / 1024, anon / 1024) + name)
        }
    }

    /// Rss and Anonymous kB per mapped file (or `[heap]`, `[anon]`, …) from `/proc/<pid>/smaps`,
    /// largest first.
    static func residentByMapping(_ pid: Int32) -> [(String, Double, Double)] {
        // Read to the end: /proc files report size 0, and a sized read stops after one chunk.
        guard let handle = FileHandle(forReadingAtPath: "/proc/\(pid)/smaps"),
            let smaps = try? handle.readToEnd().map({ String(decoding: $0, as: UTF8.self) })
        else { return [] }
        var totals: [String: (Double, Double)] = [:]
        var current = "[anon]"
        for line in smaps.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard let first = fields.first else { continue }
            if first.contains("-"), fields.count >= 5 {
                current = fields.count >= 6 ? String(fields[5]).split(separator: "/").last.map(String.init) ?? "[anon]" : "[anon]"
            } else if first == "Rss:", fields.count >= 2, let kB = Double(fields[1]) {
                totals[current, default: (0, 0)].0 += kB
            } else if first == "Anonymous:", fields.count >= 2, let kB = Double(fields[1]) {
                totals[current, default: (0, 0)].1 += kB
            }
        }
        return totals.map { ($0.key, $0.value.0, $0.value.1) }.sorted { $0.1 > $1.1 }
    }

    var ticks: Double { Double(sysconf(Int32(_SC_CLK_TCK))) }

    /// Compiles the fake NVML from this package's C source with `cc`, as a plain C library like
    /// the real `libnvidia-ml.so.1`. SwiftPM links every dynamic product with the Swift runtime
    /// (its `swiftrt.o` needs `libswiftCore.so`), which would add some 2 MB of another runtime's
    /// pages to the agent's RSS that no GPU host has.
    static func buildFakeNVML(into folder: URL) throws -> String {
        let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        let output = folder.appendingPathComponent("libFakeNVML.so").path
        let compiler = Process()
        compiler.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        compiler.arguments = [
            "cc", "-shared", "-fPIC", "-O2",
            "-I", sources.appendingPathComponent("CNVML/include").path,
            "-I", sources.appendingPathComponent("FakeNVML/include").path,
            sources.appendingPathComponent("FakeNVML/fakenvml.c").path, "-o", output, "-lpthread",
        ]
        try compiler.run()
        compiler.waitUntilExit()
        guard compiler.terminationStatus == 0 else {
            throw ValidationError("cc could not build the fake NVML from \(sources.path)/FakeNVML (exit \(compiler.terminationStatus))")
        }
        return output
    }

    /// Each thread's name and utime + stime, by thread id.
    static func threadTicks(_ pid: Int32) -> [String: (String, Double)] {
        let directory = "/proc/\(pid)/task"
        var result: [String: (String, Double)] = [:]
        for tid in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
            guard let stat = try? String(contentsOfFile: "\(directory)/\(tid)/stat", encoding: .utf8),
                let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")")
            else { continue }
            let name = String(stat[stat.index(after: open)..<close])
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 12, let utime = Double(fields[11]), let stime = Double(fields[12]) else { continue }
            result[tid] = (name, utime + stime)
        }
        return result
    }

    /// utime + stime of `pid`, in clock ticks.
    static func cpuTicks(_ pid: Int32) throws -> Double {
        let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        // Fields after the command's closing parenthesis: state is field 3, utime 14, stime 15.
        guard let close = stat.lastIndex(of: ")") else { throw ValidationError("unreadable /proc/\(pid)/stat") }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let utime = Double(fields[11]), let stime = Double(fields[12]) else {
            throw ValidationError("unreadable /proc/\(pid)/stat")
        }
        return utime + stime
    }

    /// VmRSS of `pid` in MiB.
    static func rssMiB(_ pid: Int32) throws -> Double { try statusField(pid, "VmRSS:") / 1024 }

    /// A `kB` field of `/proc/<pid>/status`.
    static func statusField(_ pid: Int32, _ name: String) throws -> Double {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(name) }),
            let value = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap({ Double($0) })
        else { throw ValidationError("no \(name) in /proc/\(pid)/status") }
        return value
    }
}

/// Writes a line to stdout at once (print buffers when stdout is a file).
private func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
