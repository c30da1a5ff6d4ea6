import Foundation
import GPUPlaneSystem
import GPUPlaneTestSupport
import Testing

/// `--help` on the built executables, as an operator types it: usage on standard output and
/// exit status 0, with nothing else done (no configuration read, no etcd dialled, no demo run).
/// Once, the daemons answered "--help: expects a value" with status 1 and `gpuplane-local`
/// ran its whole demo.
@Suite(.timeLimit(.minutes(2))) struct DaemonHelpTests {
    /// Per daemon: its configuration file, and keys that must be listed with their defaults.
    static let daemons: [(name: String, configFile: String, expected: [(flag: String, fallback: String)])] = [
        ("gpuplane-api-server", "/etc/gpuplane/api-server.conf",
         [("--port N", "default: 8080"), ("--listen TEXT", "default: 127.0.0.1"), ("--etcd.endpoints A,B,…", "default: http://127.0.0.1:2379"),
          ("--admin-token-file TEXT", "optional"), ("--log-level TEXT", "default: info")]),
        ("gpuplane-scheduler", "/etc/gpuplane/scheduler.conf",
         [("--meter-interval DURATION", "default: 5m"), ("--lease-ttl DURATION", "default: 3s"), ("--warm-pool A,B,…", "default: \"\" (empty)"),
          ("--identity TEXT", "optional")]),
        ("gpuplane-node-agent", "/etc/gpuplane/node-agent.conf",
         [("--node-token-file TEXT", "required"), ("--api-server TEXT", "default: http://127.0.0.1:8080"),
          ("--heartbeat-interval DURATION", "default: 1s"), ("--model-server-ports TEXT", "default: 20000-20999")]),
    ]

    @Test func theDaemonsPrintUsageAndExitZero() async throws {
        for daemon in Self.daemons {
            for flag in ["--help", "-h"] {
                // A bad setting in the environment and a bad flag before it change nothing.
                let result = try await Self.run(daemon.name, ["--port", "x", flag], environment: ["GPUPLANE_LOG_LEVEL": "x", "GPUPLANE_CONFIG": "/nonexistent"])
                #expect(result.status == 0, "\(daemon.name) \(flag): exit \(result.status)\n\(result.stderr)\(result.stdout)")
                #expect(result.stderr.isEmpty, "\(daemon.name) \(flag): \(result.stderr)")
                let usage = result.stdout
                #expect(usage.hasPrefix("usage: \(daemon.name) "), "\(usage)")
                #expect(usage.contains(daemon.configFile) && usage.contains("--config PATH") && usage.contains("--help"), "\(usage)")
                let lines = usage.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
                for (key, fallback) in daemon.expected {
                    guard let index = lines.firstIndex(of: "  " + key) else {
                        Issue.record("\(daemon.name): no line '  \(key)' in\n\(usage)")
                        continue
                    }
                    let block = lines[index...].prefix(3).joined(separator: "\n")
                    #expect(block.contains("(\(fallback); GPUPLANE_"), "\(daemon.name) \(key): \(block)")
                }
                // Every key, not just these: each flag line has its default (or says there is none) and its variable.
                let keyLines = lines.indices.filter { lines[$0].hasPrefix("  --") && !lines[$0].hasPrefix("  --config") && !lines[$0].hasPrefix("  --help") }
                #expect(keyLines.count >= daemon.expected.count)
                for index in keyLines {
                    let block = lines[index...].prefix(3).joined(separator: "\n")
                    #expect(block.contains("(default: ") || block.contains("(optional;") || block.contains("(required;"), "\(block)")
                    #expect(block.contains("; GPUPLANE_"), "\(block)")
                }
            }
        }
    }

    @Test func gpuplaneLocalPrintsUsageWithoutRunningTheDemo() async throws {
        let help = try await Self.run("gpuplane-local", ["--help"])
        #expect(help.status == 0, "exit \(help.status)\n\(help.stderr)\(help.stdout)")
        #expect(help.stdout.hasPrefix("usage: gpuplane-local"), "\(help.stdout)")
        #expect(help.stdout.contains("--example FILE") && help.stdout.contains("--keep-running"), "\(help.stdout)")
        #expect(!help.stdout.contains("==>"), "the demo ran:\n\(help.stdout)")
        #expect(try await Self.run("gpuplane-local", ["-h"]).status == 0)
        // A flag it does not know is a mistake to stop at, not one to run the demo past.
        let unknown = try await Self.run("gpuplane-local", ["--keep-runing"])
        #expect(unknown.status == 2, "exit \(unknown.status)\n\(unknown.stderr)\(unknown.stdout)")
        #expect(unknown.stderr.contains("--keep-runing") && unknown.stderr.contains("usage:"), "\(unknown.stderr)")
        #expect(!unknown.stdout.contains("==>"))
    }

    /// Runs a built executable (next to the test bundle) with a 30 s limit.
    /// `gpuplane-node-agent gpus`: the GPUs NVML reports (here the fake NVML's), the machine
    /// type they match and the health events they deliver, with no token or api-server; a
    /// missing NVML is exit status 1 naming the library.
    @Test func theAgentListsTheHostsGPUsWithoutRegistering() async throws {
        let directory = try TestEnvironment.temporaryDirectory(prefix: "gpus")
        defer { try? FileManager.default.removeItem(at: directory) }
        let config = directory.appendingPathComponent("fake-nvml.conf")
        try """
            driver 550.54.15
            gpu index=0 uuid=GPU-0a0a0a0a-0000-4000-8000-000000000000 name="NVIDIA H100 80GB HBM3" memory_mib=81559 temp=35 power_mw=70000 pci=0000:18:00.0
            gpu index=1 uuid=GPU-0b0b0b0b-0000-4000-8000-000000000001 name="NVIDIA H100 80GB HBM3" memory_mib=81559 temp=47 power_mw=310000 pci=0000:19:00.0

            """.write(to: config, atomically: true, encoding: .utf8)
        let library = LocalClusterTests.binaries.appendingPathComponent("libFakeNVML.so").path
        let listed = try await Self.run(
            "gpuplane-node-agent", ["gpus", "--nvml-library", library],
            environment: ["GPUPLANE_FAKE_NVML_CONFIG": config.path, "GPUPLANE_CONFIG": "/nonexistent"])
        #expect(listed.status == 0, "\(listed.stderr)")
        #expect(listed.stdout.hasPrefix("driver 550.54.15; 2 GPU(s); machine type GPU-H100; health events: GPU 0: XID+ECC, GPU 1: XID+ECC"), "\(listed.stdout)")
        let rows = listed.stdout.split(separator: "\n").dropFirst(2)
        #expect(rows.count == 2, "\(listed.stdout)")
        #expect(rows.first?.hasPrefix("0      GPU-0a0a0a0a-0000-4000-8000-000000000000  NVIDIA H100 80GB HBM3") == true, "\(listed.stdout)")
        #expect(rows.last?.contains("47C   310") == true, "\(listed.stdout)")

        let missing = try await Self.run("gpuplane-node-agent", ["gpus", "--nvml-library", directory.appendingPathComponent("none.so").path])
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("none.so could not be loaded"), "\(missing.stderr)")
        let wrong = try await Self.run("gpuplane-node-agent", ["gpus", "--bogus"])
        #expect(wrong.status == 2 && wrong.stderr.contains("unknown argument '--bogus'"), "\(wrong.stderr)")
    }

    static func run(_ name: String, _ arguments: [String], environment: [String: String] = [:]) async throws
        -> (status: Int32, stdout: String, stderr: String)
    {
        let executable = LocalClusterTests.binaries.appendingPathComponent(name)
        let directory = try TestEnvironment.temporaryDirectory(prefix: "help")
        defer { try? FileManager.default.removeItem(at: directory) }
        return try await TestEnvironment.offPool {
            // Files, not pipes: nothing to drain while waiting, whatever the child writes.
            let outFile = directory.appendingPathComponent("stdout")
            let errFile = directory.appendingPathComponent("stderr")
            let out = open(outFile.path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
            let err = open(errFile.path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
            let null = open("/dev/null", O_RDONLY | O_CLOEXEC)
            defer { for fd in [out, err, null] { close(fd) } }
            let pid = try Spawn.start(
                executable.path, arguments, environment: ProcessInfo.processInfo.environment.merging(environment) { $1 },
                stdin: null, stdout: out, stderr: err)
            let deadline = ContinuousClock.now + .seconds(30)
            var status = Spawn.status(pid)
            while status == nil, ContinuousClock.now < deadline {
                usleep(20_000)
                status = Spawn.status(pid)
            }
            if status == nil {
                kill(pid, SIGKILL)
                status = Spawn.status(pid, wait: true)
            }
            let stdout = (try? String(contentsOf: outFile, encoding: .utf8)) ?? ""
            let stderr = (try? String(contentsOf: errFile, encoding: .utf8)) ?? ""
            return (status ?? -1, stdout, stderr)
        }
    }
}
