import ArgumentParser
import EtcdClient
import Foundation
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneTestSupport
import GPUPlaneSystem

/// Benchmarks of gpuplane's own layers, each against real servers it starts itself.
@main
struct GPUPlaneBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gpuplane-bench", abstract: "Benchmarks of gpuplane's layers.",
        subcommands: [StoreBench.self, APIBench.self, GatewayBench.self, SchedulerBench.self, AgentBench.self, TraceBench.self, PlacementBench.self, FleetBench.self, HeartbeatBench.self, ConnectionBench.self])
}

/// The object the store phases write.
struct BenchObject: Resource {
    static var kind: ResourceKind { .event }
    var metadata: ObjectMeta
    var counter: Int
    var note: String
}

/// `gpuplane-bench store`: raw gateway puts vs. the typed store, and watch latency.
struct StoreBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store",
        abstract: "Starts its own etcd; measures raw puts/s, store creates/updates per second, watch latency.")

    @Option(help: "Concurrent writers in the concurrent phases.")
    var concurrency = 16

    @Option(help: "Seconds per throughput phase.")
    var seconds = 3.0

    @Option(help: "Puts timed in the watch latency phase.")
    var watchSamples = 500

    @Option(help: "Use this etcd instead of starting one (client URL).")
    var endpoint: String?

    func run() async throws {
        let fixture: EtcdFixture? = endpoint == nil ? try await EtcdFixture.start() : nil
        defer { fixture?.shutdown() }
        let endpoints = endpoint.map { [$0] } ?? fixture?.endpoints ?? []
        let client = try Etcd.Client(Etcd.Configuration(endpoints: endpoints, requestTimeout: .seconds(10)))
        let store = ResourceStore(client: client)
        let status = try await client.status()
        print("etcd \(status.version) at \(endpoints.joined(separator: ",")); \(seconds)s per phase, concurrency \(concurrency)")
        let value = String(repeating: "x", count: 200)

        let rawSeq = try await throughput(workers: 1) { w, i in
            _ = try await client.put("/bench/raw/seq/\(w)/\(i)", value)
        }
        let rawConc = try await throughput(workers: concurrency) { w, i in
            _ = try await client.put("/bench/raw/conc/\(w)/\(i)", value)
        }
        let txnConc = try await throughput(workers: concurrency) { w, i in
            let key = "/bench/raw/txn/\(w)/\(i)"
            _ = try await client.txn(
                compare: [.createRevision(key, .equal, 0)], success: [.put(.init(key, value))],
                failure: [.range(.init(.key(key), keysOnly: true))])
        }
        let createSeq = try await throughput(workers: 1) { w, i in
            _ = try await store.create(BenchObject(metadata: ObjectMeta(name: "s\(w)-\(i)", tenant: "seq"), counter: 0, note: value))
        }
        let createConc = try await throughput(workers: concurrency) { w, i in
            _ = try await store.create(BenchObject(metadata: ObjectMeta(name: "c\(w)-\(i)", tenant: "conc"), counter: 0, note: value))
        }
        var seeds: [BenchObject] = []
        for w in 0..<concurrency {
            seeds.append(try await store.create(BenchObject(metadata: ObjectMeta(name: "u\(w)", tenant: "upd"), counter: 0, note: value)))
        }
        let current = Locked(seeds)
        let updateConc = try await throughput(workers: concurrency) { w, _ in
            var object = current.withLock { $0[w] }
            object.counter += 1
            let stored = try await store.update(object)
            current.withLock { $0[w] = stored }
        }
        let readSeed = try await store.create(BenchObject(metadata: ObjectMeta(name: "r", tenant: "read"), counter: 0, note: value))
        let linearizable = try await readsDuringWrites(store: store, client: client, object: readSeed, serializable: false, value: value)
        let serializable = try await readsDuringWrites(store: store, client: client, object: readSeed, serializable: true, value: value)
        let (p50, p99, mean) = try await watchLatency(client: client, samples: watchSamples, value: value)
        let stats = client.transportStatistics

        func f(_ x: Double) -> String { String(format: "%.0f", x) }
        func r(_ x: Double) -> String { String(format: "%.2f", x) }
        print("")
        print("| phase | ops/s |")
        print("| --- | ---: |")
        print("| raw put, sequential | \(f(rawSeq)) |")
        print("| raw put, \(concurrency) concurrent | \(f(rawConc)) |")
        print("| raw txn create-if-absent, \(concurrency) concurrent | \(f(txnConc)) |")
        print("| store create, sequential | \(f(createSeq)) |")
        print("| store create, \(concurrency) concurrent | \(f(createConc)) |")
        print("| store update (CAS), \(concurrency) concurrent | \(f(updateConc)) |")
        print("")
        print("ratios: create/put sequential \(r(createSeq / rawSeq)), create/put concurrent \(r(createConc / rawConc)), update/put concurrent \(r(updateConc / rawConc)), create/raw txn concurrent \(r(createConc / txnConc))")
        print(String(
            format: "one object read while %d writers write (store get; %.0f and %.0f writes/s): linearizable p50 %.2f ms, p99 %.2f ms; serializable p50 %.2f ms, p99 %.2f ms (ratio p50 %.2f, p99 %.2f)",
            concurrency, linearizable.writes, serializable.writes, linearizable.p50, linearizable.p99, serializable.p50, serializable.p99,
            serializable.p50 / linearizable.p50, serializable.p99 / linearizable.p99))
        print(String(format: "watch delivery latency (put → event), %d samples: p50 %.2f ms, p99 %.2f ms, mean %.2f ms", watchSamples, p50, p99, mean))
        print("transport: \(stats.transfers) transfers over \(stats.connectionsOpened) TCP connections")
    }

    /// Runs `op` in `workers` loops for `seconds`; operations per second.
    func throughput(workers: Int, _ op: @escaping @Sendable (Int, Int) async throws -> Void) async throws -> Double {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        let start = ContinuousClock.now
        let total = try await withThrowingTaskGroup(of: Int.self) { group in
            for w in 0..<workers {
                group.addTask {
                    var i = 0
                    while ContinuousClock.now < deadline {
                        try await op(w, i)
                        i += 1
                    }
                    return i
                }
            }
            return try await group.reduce(0, +)
        }
        let elapsed = ContinuousClock.now - start
        return Double(total) / elapsed.seconds
    }

    /// `concurrency` writers put for ``seconds`` while one reader reads `object` again and again
    /// (``ResourceStore/get(_:tenant:name:serializable:)``): the reads' p50 and p99 in ms, and
    /// the writes per second beside them.
    func readsDuringWrites(
        store: ResourceStore, client: Etcd.Client, object: BenchObject, serializable: Bool, value: String
    ) async throws -> (p50: Double, p99: Double, writes: Double) {
        async let writes = throughput(workers: concurrency) { w, i in
            _ = try await client.put("/bench/raw/during/\(w)/\(i)", value)
        }
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        var reads: [Double] = []
        while ContinuousClock.now < deadline {
            let t0 = ContinuousClock.now
            _ = try await store.get(BenchObject.self, tenant: object.metadata.tenant, name: object.metadata.name, serializable: serializable)
            reads.append((ContinuousClock.now - t0).seconds * 1000)
        }
        return (pct(reads, 0.5), pct(reads, 0.99), try await writes)
    }

    /// Puts `samples` keys one after another and times each from just before the put until its
    /// event arrives on a watch.
    func watchLatency(client: Etcd.Client, samples: Int, value: String) async throws -> (Double, Double, Double) {
        let sent = Locked([String: ContinuousClock.Instant]())
        let latencies = Locked([Double]())
        let prefix = "/bench/watch/"
        let watcher = Task {
            for try await batch in client.watch(.prefix(prefix)) {
                let now = ContinuousClock.now
                for event in batch.events {
                    if let t0 = sent.withLock({ $0[event.kv.keyString] }) {
                        let d = now - t0
                        let ms = d.seconds * 1000
                        latencies.withLock { $0.append(ms) }
                    }
                }
                if latencies.withLock({ $0.count }) >= samples { return }
            }
        }
        // Wait until the watch is live: a marker write shows up (not timed).
        _ = try await client.put(prefix + "warmup", value)
        try await Task.sleep(for: .milliseconds(200))
        for i in 0..<samples {
            let key = prefix + "\(i)"
            sent.withLock { $0[key] = .now }
            _ = try await client.put(key, value)
        }
        let deadline = ContinuousClock.now + .seconds(30)
        while latencies.withLock({ $0.count }) < samples && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        watcher.cancel()
        let sorted = latencies.withLock { $0 }.sorted()
        guard !sorted.isEmpty else { return (.nan, .nan, .nan) }
        func pct(_ p: Double) -> Double { sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
        return (pct(0.5), pct(0.99), sorted.reduce(0, +) / Double(sorted.count))
    }
}

