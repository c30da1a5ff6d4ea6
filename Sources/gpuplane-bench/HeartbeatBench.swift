import ArgumentParser
import EtcdClient
import Foundation
import GPUPlaneAPI
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneSystem
import GPUPlaneTestSupport
import Logging

/// `gpuplane-bench heartbeats`: an api-server's heartbeat tracker writing many nodes' keys at
/// once — their first beats to it (it took over a stopped api-server's nodes), then the sweep
/// that finds them all silent (a rack lost) — through the keys' group commit, against the same
/// tracker over a store that does not batch (one etcd request a key, as before), alternating
/// in one run on one etcd.
struct HeartbeatBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "heartbeats",
        abstract: "Starts its own etcd; times N nodes' first beats at once and the sweep that marks them silent, batched vs. a request a key.")

    @Option(help: "Nodes beating at once.")
    var nodes = 2500

    @Option(help: "Rounds; each runs both ways, alternating.")
    var rounds = 3

    enum Way: String, CaseIterable {
        case alone = "a request a key"
        case batched = "group commit"
    }

    struct Sample {
        var beats: Duration
        var beatRequests: Int
        var beatConnections: Int
        var failedBeats: Int
        var sweep: Duration
        var sweepRequests: Int
        var sweepConnections: Int
    }

    func validate() throws {
        guard (1...100_000).contains(nodes) else {
            throw ValidationError("--nodes must be 1 to 100000, not \(nodes)")
        }
        guard (1...100).contains(rounds) else {
            throw ValidationError("--rounds must be 1 to 100, not \(rounds)")
        }
    }

    func run() async throws {
        var logger = Logger(label: "bench.heartbeats")
        logger.logLevel = .error
        let etcd = try await EtcdFixture.start()
        defer { etcd.shutdown() }
        let setup = try Etcd.Client(Etcd.Configuration(endpoints: etcd.endpoints, requestTimeout: .seconds(30)))
        let store = ResourceStore(client: setup)
        let names = (0..<nodes).map { "node-\($0)" }
        for start in stride(from: 0, to: nodes, by: 100) {
            var txn = StoreTransaction()
            for name in names[start..<min(start + 100, nodes)] {
                try txn.create(Node(metadata: ObjectMeta(name: name), spec: NodeSpec(machineType: "cpu", gpus: [])))
            }
            _ = try await store.commit(txn)
        }
        print("\(nodes) nodes, \(rounds) rounds; each way a new etcd client (its own connection pool) and tracker")
        var samples: [Way: [Sample]] = [:]
        for round in 0..<rounds {
            let order: [Way] = round % 2 == 0 ? [.alone, .batched] : [.batched, .alone]
            for way in order {
                samples[way, default: []].append(try await measure(way, names: names, endpoints: etcd.endpoints, logger: logger))
            }
        }
        print("| way | first beats: s (median) | keys/s | etcd requests | connections opened | beats failed | silent sweep: s | etcd requests | connections opened |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for way in Way.allCases {
            let s = samples[way] ?? []
            let beats = median(s.map { $0.beats.seconds })
            print(
                "| \(way.rawValue) | \(format(beats)) | \(Int((Double(nodes) / beats).rounded())) | \(median(s.map { Double($0.beatRequests) }).formatted0) "
                    + "| \(median(s.map { Double($0.beatConnections) }).formatted0) | \(s.map(\.failedBeats).reduce(0, +)) "
                    + "| \(format(median(s.map { $0.sweep.seconds }))) | \(median(s.map { Double($0.sweepRequests) }).formatted0) "
                    + "| \(median(s.map { Double($0.sweepConnections) }).formatted0) |")
        }
        let alone = samples[.alone] ?? []
        let batched = samples[.batched] ?? []
        print(
            "ratio (a request a key / group commit, medians): first beats \(format(median(alone.map { $0.beats.seconds }) / median(batched.map { $0.beats.seconds })))x the time, "
                + "silent sweep \(format(median(alone.map { $0.sweep.seconds }) / median(batched.map { $0.sweep.seconds })))x")
    }

    private func measure(_ way: Way, names: [String], endpoints: [String], logger: Logger) async throws -> Sample {
        let client = try Etcd.Client(Etcd.Configuration(endpoints: endpoints, requestTimeout: .seconds(30)))
        let store = ResourceStore(client: client, batchWrites: way == .batched)
        let tracker = HeartbeatTracker(store: store, ttl: 5, silentAfter: .seconds(3), logger: logger)
        defer { tracker.stop() }
        let before = client.transportStatistics
        let start = ContinuousClock.now
        let failed = await withTaskGroup(of: Bool.self) { group in
            for name in names {
                group.addTask {
                    do {
                        try await tracker.beat(node: name, registering: false, now: start)
                        return false
                    } catch {
                        return true
                    }
                }
            }
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        let beats = ContinuousClock.now - start
        let afterBeats = client.transportStatistics
        let sweepStart = ContinuousClock.now
        await tracker.sweep(now: sweepStart + .seconds(60))
        let sweep = ContinuousClock.now - sweepStart
        let afterSweep = client.transportStatistics
        // Every key silent, written by this tracker: the sweep did its work.
        let listed = try await NodeHeartbeats(store: store).list().keys
        let silent = names.filter { listed[$0] == .silent(server: tracker.serverID) }.count
        guard silent == names.count - failed else {
            throw ValidationError("\(way.rawValue): \(silent) of \(names.count - failed) keys silent after the sweep")
        }
        return Sample(
            beats: beats, beatRequests: afterBeats.transfers - before.transfers,
            beatConnections: afterBeats.connectionsOpened - before.connectionsOpened, failedBeats: failed,
            sweep: sweep, sweepRequests: afterSweep.transfers - afterBeats.transfers,
            sweepConnections: afterSweep.connectionsOpened - afterBeats.connectionsOpened)
    }

    private func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return 0 }
        return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }

    private func format(_ value: Double) -> String { String(format: "%.2f", value) }
}

extension Double {
    fileprivate var formatted0: String { String(Int(rounded())) }
}
