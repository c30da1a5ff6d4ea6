import ArgumentParser
import Foundation
import GPUPlaneSystem

/// Closed-loop load for the benchmarks: `workers` tasks each repeat one operation for
/// `seconds`; the result is the rate, the latency percentiles, and the CPU each process spent per
/// operation (read from `/proc/<pid>/stat` before and after).
struct LoadPhases {
    /// Seconds per phase.
    var seconds: Double
    /// Whether to print each phase's latency tail.
    var tail: Bool

    struct Result {
        var rate: Double
        var p50: Double
        var p99: Double
        /// CPU µs per operation spent by etcd, and by this process (load generator and api-server).
        var etcdCPU: Double = 0
        var selfCPU: Double = 0
        /// CPU µs per operation of the api-server process (0 when it runs in this one).
        var serverCPU: Double = 0
    }

    /// utime + stime of a process, in clock ticks (`/proc/<pid>/stat` fields 14 and 15).
    static func cpuTicks(_ pid: String) -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return user + system
    }

    func run(workers: Int, etcdPID: Int32? = nil, serverPID: Int32? = nil, _ op: @escaping @Sendable (Int, Int) async throws -> Void) async throws -> Result {
        let etcdBefore = etcdPID.map { Self.cpuTicks(String($0)) } ?? 0
        let serverBefore = serverPID.map { Self.cpuTicks(String($0)) } ?? 0
        let selfBefore = Self.cpuTicks("self")
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        let start = ContinuousClock.now
        // (seconds since the phase began, latency) per operation.
        let samples = try await withThrowingTaskGroup(of: [(Double, Double)].self) { group in
            for w in 0..<workers {
                group.addTask {
                    var samples: [(Double, Double)] = []
                    var i = 0
                    while ContinuousClock.now < deadline {
                        let t0 = ContinuousClock.now
                        try await op(w, i)
                        samples.append(((t0 - start).seconds, (ContinuousClock.now - t0).seconds))
                        i += 1
                    }
                    return samples
                }
            }
            return try await group.reduce(into: [(Double, Double)]()) { $0 += $1 }
        }
        let elapsed = (ContinuousClock.now - start).seconds
        let sorted = samples.map(\.1).sorted()
        func pct(_ p: Double) -> Double { sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let operations = Double(max(sorted.count, 1))
        let etcdCPU = etcdPID.map { (Self.cpuTicks(String($0)) - etcdBefore) / ticks * 1e6 / operations } ?? 0
        let selfCPU = (Self.cpuTicks("self") - selfBefore) / ticks * 1e6 / operations
        let serverCPU = serverPID.map { (Self.cpuTicks(String($0)) - serverBefore) / ticks * 1e6 / operations } ?? 0
        if tail { Self.printTail(samples, sorted: sorted, workers: workers) }
        return Result(rate: Double(sorted.count) / elapsed, p50: pct(0.5), p99: pct(0.99), etcdCPU: etcdCPU, selfCPU: selfCPU, serverCPU: serverCPU)
    }

    /// Prints p90, p99, p99.9 and max, and how the operations slower than p99 spread over the
    /// phase's 100 ms windows: evenly (queueing) or in a few windows (stalls).
    static func printTail(_ samples: [(Double, Double)], sorted: [Double], workers: Int) {
        guard !sorted.isEmpty else { return }
        func pct(_ p: Double) -> Double { sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
        let p99 = pct(0.99)
        var windows: [Int: Int] = [:]
        for (start, latency) in samples where latency >= p99 { windows[Int(start * 10), default: 0] += 1 }
        let counts = windows.values.sorted(by: >)
        let slow = counts.reduce(0, +)
        let top = counts.prefix(max(1, counts.count / 10)).reduce(0, +)
        print(String(
            format: "    %d clients: p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f ms; %d ops ≥ p99 in %d windows of 100 ms, %.0f%% of them in the busiest tenth",
            workers, pct(0.9) * 1000, p99 * 1000, pct(0.999) * 1000, sorted[sorted.count - 1] * 1000, slow, counts.count,
            Double(top) / Double(max(slow, 1)) * 100))
    }
}

/// The options every load benchmark takes.
struct LoadOptions: ParsableArguments {
    @Option(help: "Concurrent clients, comma-separated.")
    var clients = "1,16,64"

    @Option(help: "Seconds per phase.")
    var seconds = 3.0

    @Flag(help: "Also print each phase's latency tail (p90, p99.9, max) and how its slow operations cluster in time.")
    var tail = false

    @Option(help: "Where the api-server runs: 'process' (the gpuplane-api-server executable next to this one) or 'in-process'.")
    var server: APIBench.ServerMode = .process

    /// The client counts, in order.
    var clientCounts: [Int] { clients.split(separator: ",").compactMap { Int($0) } }

    /// The phases these options describe.
    var phases: LoadPhases { LoadPhases(seconds: seconds, tail: tail) }
}
