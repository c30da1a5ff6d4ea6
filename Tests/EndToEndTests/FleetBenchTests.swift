import Foundation
import GPUPlaneTestSupport
import Testing

/// `gpuplane-bench fleet` at 100 hollow nodes, so the whole-system scale harness cannot rot:
/// every process starts, every node registers through the api-servers, every applied replica is
/// bound and reported running by its hollow node, and the failover phases produce their rows.
/// No timing is asserted (docs/benchmarks.md, "Whole system").
@Suite(.serialized, .timeLimit(.minutes(15))) struct FleetBenchTests {
    struct Report: Decodable {
        struct Process: Decodable {
            var name: String
            var rssMiB: Double
            var restRSSMiB: Double?
            var restHeapMiB: Double?
        }
        var nodes: Int
        var spuriousNotReady: Int
        var slowBeats: Int
        var spuriousAfterSlowBeat: Int
        var victims: Int
        var nodesReady: Int
        var applications: Int
        var applyErrors: Int
        var replicas: Int
        var bound: Int
        var running: Int
        var placementsPerSecond: Double
        var fanoutSamples: Int
        var rawPutsPerSecond: Double
        var rawTxnsPerSecond: Double
        var etcdWatchers: Int
        var watchesFromCaches: Int?
        var watchesOnEtcd: Int?
        var etcdWatchersAfterRestart: Int?
        var watchesOnEtcdAfterRestart: Int?
        var silentToNotReady: Double?
        var silentToRescheduled: Double?
        var victimReplicas: Int
        var schedulerFailover: Double?
        var apiServerRestartNotReady: Int?
        var nodesBackSeconds: Double?
        var apiServerStopSeconds: Double?
        var apiServerGracefulRestartNotReady: Int?
        var watchesPerAPIServerAfterReturn: [Int]?
        var applyAnsweredP50: Double
        var scheduler: Scheduler
        var processes: [Process]
        struct Scheduler: Decodable {
            var passes: Int
            var bindings: Int
        }
    }

    @Test(.enabled(if: EtcdFixture.isAvailable))
    func aHundredNodeReportHasEveryRowAndEveryReplicaRuns() async throws {
        let bench = LocalClusterTests.binaries.appendingPathComponent("gpuplane-bench").path
        let hollow = LocalClusterTests.binaries.appendingPathComponent("gpuplane-hollow-nodes").path
        guard FileManager.default.isExecutableFile(atPath: bench), FileManager.default.isExecutableFile(atPath: hollow) else {
            Issue.record("build gpuplane-bench and gpuplane-hollow-nodes first (swift build --build-tests)")
            return
        }
        let directory = try TestEnvironment.temporaryDirectory(prefix: "fleet-bench")
        defer { try? FileManager.default.removeItem(at: directory) }
        let json = directory.appendingPathComponent("report.jsonl")
        let limit = Int(300 * TestEnvironment.timeScale)
        let (status, output) = try await TestEnvironment.offPool {
            try Command.run(
                bench,
                ["fleet", "--nodes", "100", "--rate", "50", "--steady-seconds", "3", "--rest-seconds", "1", "--timeout", "\(limit)", "--json", json.path],
                timeout: .seconds(limit * 3))
        }
        #expect(status == 0, "\(output.suffix(4000))")
        let line = try #require(try String(contentsOf: json, encoding: .utf8).split(separator: "\n").first, "no report line:\n\(output.suffix(4000))")
        let report = try JSONDecoder().decode(Report.self, from: Data(line.utf8))
        #expect(report.nodes == 100 && report.nodesReady == 100)
        #expect(report.applications == 100 && report.applyErrors == 0, "\(output.suffix(3000))")
        // Every replica applied (the applications' and the deployment's) was bound and reported
        // running by a hollow node, through its watch and status report.
        #expect(report.replicas >= report.applications)
        #expect(report.bound >= report.applications - report.applyErrors)
        #expect(report.running == report.bound, "\(output.suffix(3000))")
        #expect(report.placementsPerSecond > 0 && report.rawPutsPerSecond > 0 && report.rawTxnsPerSecond > 0)
        #expect(report.fanoutSamples >= report.running)
        #expect(report.etcdWatchers > 0)
        // The api-servers answer how their watches are served (every node holds two).
        #expect((report.watchesFromCaches ?? 0) > 0 && report.watchesOnEtcd != nil, "\(output.suffix(3000))")
        #expect(report.etcdWatchersAfterRestart != nil && report.watchesOnEtcdAfterRestart != nil)
        // The schedulers' own counters were read over the workload: every binding is there.
        #expect(report.scheduler.passes > 0 && report.scheduler.bindings >= report.bound, "\(report.scheduler)")
        #expect(report.applyAnsweredP50 > 0)
        // The silent-node phase moved the victims' replicas; both failovers placed or answered.
        #expect(report.silentToNotReady != nil)
        #expect(report.victimReplicas > 0)
        #expect(report.silentToRescheduled != nil, "\(output.suffix(3000))")
        #expect(report.schedulerFailover != nil)
        #expect(report.apiServerRestartNotReady != nil)
        // The restarted api-server's nodes went back to it (their own, by name): both hold
        // nodes' watches again.
        #expect(report.nodesBackSeconds != nil, "\(output.suffix(3000))")
        #expect(report.watchesPerAPIServerAfterReturn?.count == 2 && report.watchesPerAPIServerAfterReturn?.allSatisfy { $0 > 0 } == true)
        // The other api-server stopped by SIGTERM with its nodes' watches open, and exited
        // (it waited for SIGKILL before its shutdown ended the watches).
        #expect(report.apiServerStopSeconds != nil, "\(output.suffix(3000))")
        #expect(report.apiServerGracefulRestartNotReady != nil)
        #expect(Set(report.processes.map(\.name)) == ["etcd", "api-server-0", "api-server-1", "scheduler-a", "scheduler-b", "hollow nodes, per 1,000"])
        #expect(report.processes.allSatisfy { $0.rssMiB > 0 })
        // And each one's resident set at rest at the end (--rest-seconds).
        #expect(report.processes.allSatisfy { ($0.restRSSMiB ?? 0) > 0 }, "\(report.processes.map { "\($0.name) \($0.restRSSMiB ?? -1)" })")
        // ...and, for the api-servers and schedulers, the live part of their heap then.
        let daemons = report.processes.filter { $0.name.hasPrefix("api-server") || $0.name.hasPrefix("scheduler") }
        #expect(daemons.count == 4 && daemons.allSatisfy { ($0.restHeapMiB ?? 0) > 0 }, "\(daemons.map { "\($0.name) \($0.restHeapMiB ?? -1)" })")
        // The markdown table is printed too, with the hollow nodes' late heartbeat answers
        // (journal `slowbeat`) beside the spurious NotReady they may explain.
        #expect(output.contains("| apply answered p50 / p99 |") && output.contains("| apply → bound p50 / p99 |") && output.contains("| process | RSS MiB (peak) |"))
        #expect(output.contains("| heartbeats answered after more than an interval (1 s) | \(report.slowBeats) |"), "\(output.suffix(3000))")
        #expect(report.spuriousAfterSlowBeat <= report.spuriousNotReady)
    }
}

/// `gpuplane-bench connections` at a small size, so it cannot rot: its api-server process
/// starts, answers fresh connections before, while and after it holds the idle ones, and the
/// report has its three phases and the first answer after the close. No timing is asserted
/// (docs/benchmarks.md, "One task group per connection shard").
@Suite(.timeLimit(.minutes(5))) struct ConnectionBenchTests {
    @Test(.enabled(if: EtcdFixture.isAvailable))
    func aSmallRunReportsEveryPhase() async throws {
        let bench = LocalClusterTests.binaries.appendingPathComponent("gpuplane-bench").path
        guard FileManager.default.isExecutableFile(atPath: bench) else {
            Issue.record("build gpuplane-bench first (swift build --build-tests)")
            return
        }
        let (status, output) = try await TestEnvironment.offPool {
            try Command.run(
                bench, ["connections", "--open", "300", "--clients", "2", "--seconds", "0.3"],
                timeout: .seconds(Int(120 * TestEnvironment.timeScale)))
        }
        #expect(status == 0, "\(output.suffix(3000))")
        // Each phase answered requests and none failed ("N failed" would follow the line).
        for phase in ["no other connection open", "300 idle connections open", "right after"] {
            let line = output.split(separator: "\n").first { $0.trimmingCharacters(in: .whitespaces).hasPrefix(phase) }
            let words = line?.split(separator: " ") ?? []
            let rate = words.firstIndex(of: "requests/s").flatMap { $0 > 0 ? Double(words[$0 - 1]) : nil }
            #expect((rate ?? 0) > 0, "\(phase): \(output.suffix(2000))")
            #expect(line?.contains("failed") == false, "\(output.suffix(2000))")
        }
        #expect(output.contains("opened 300 idle connections in "))
        #expect(output.contains("the next fresh request was answered ") && !output.contains("no answer within"), "\(output.suffix(2000))")
    }
}
