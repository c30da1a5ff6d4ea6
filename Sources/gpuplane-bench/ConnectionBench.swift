import ArgumentParser
import Foundation
import GPUPlaneSystem
import GPUPlaneTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// `gpuplane-bench connections`: what a new connection costs an api-server that already
/// holds many (an api-server with 5,000 nodes holds ~10,000: a watch and calls a node), and
/// what closing them all at once (the nodes of a lost rack, a network blip) leaves it to do.
/// Fresh-connection requests (`GET /healthz`, a new TCP connection each, closed after its
/// answer) are timed with no other connection open, with `--open` idle kept-alive connections
/// held, and right after those are closed; each phase prints its rate and the api-server's
/// CPU per request beside the first phase's, measured in the same run.
struct ConnectionBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "connections",
        abstract: "Starts its own etcd and api-server; times fresh-connection requests with no, then N, other connections open, then after closing them.")

    @Option(help: "Idle kept-alive connections held in the second phase.")
    var open = 10_000

    @Option(help: "Threads making fresh-connection requests at once.")
    var clients = 4

    @Option(help: "Seconds per phase.")
    var seconds = 3.0

    func validate() throws {
        guard (1...100_000).contains(open) else { throw ValidationError("--open must be 1 to 100000, not \(open)") }
        guard (1...256).contains(clients) else { throw ValidationError("--clients must be 1 to 256, not \(clients)") }
        guard seconds > 0 && seconds <= 600 else { throw ValidationError("--seconds must be above 0 and at most 600, not \(seconds)") }
    }

    struct Phase {
        var rate: Double
        var serverMicroseconds: Double
        var failures: Int
    }

    func run() async throws {
        let limit = FileLimit.raiseToHardLimit()
        guard limit > UInt64(open + 256) else {
            throw ValidationError("this process may open \(limit) files: --open \(open) needs more (raise the hard limit with ulimit -Hn, or open fewer)")
        }
        // Every connection comes from 127.0.0.1: no per-source limit; idle ones kept 10 minutes.
        let bench = try await BenchServer(
            mode: .process, name: "bench-connections",
            serverArguments: ["--max-connections-per-source", "0", "--keep-alive-timeout", "600"])
        defer { bench.stop() }
        guard let server = bench.process, let port = URLComponents(string: bench.base)?.port else {
            throw ValidationError("the api-server did not start as a process")
        }
        print("api-server pid \(server.pid) on port \(port); \(clients) clients, \(seconds) s a phase")
        let listening = ContinuousClock.now + .seconds(60)
        while !(TestSockets.connectLoopback(port: port).map { fd in defer { close(fd) }; return Self.request(fd) } ?? false) {
            guard ContinuousClock.now < listening else { throw ValidationError("the api-server did not answer /healthz within 60 s") }
            try await Task.sleep(for: .milliseconds(50))
        }

        let quiet = await measure(port: port, serverPID: server.pid)
        report("no other connection open", quiet, baseline: quiet)

        let opening = ContinuousClock.now
        let count = open
        var idle = try await TestEnvironment.offPool("bench-connections-open") { () throws -> [Int32] in
            var fds: [Int32] = []
            fds.reserveCapacity(count)
            for _ in 0..<count {
                guard let fd = TestSockets.connectLoopback(port: port) else {
                    let failure = errno
                    for fd in fds { close(fd) }
                    throw ValidationError("opening idle connection \(fds.count + 1) of \(count) failed (errno \(failure))")
                }
                fds.append(fd)
                guard Self.request(fd) else {
                    for fd in fds { close(fd) }
                    throw ValidationError("idle connection \(fds.count) of \(count) got no answer to GET /healthz")
                }
            }
            return fds
        }
        defer { for fd in idle { close(fd) } }
        print(String(format: "opened %d idle connections in %.1f s", open, (ContinuousClock.now - opening).seconds))
        let held = await measure(port: port, serverPID: server.pid)
        report("\(open) idle connections open", held, baseline: quiet)

        // Newest first, as a client closing what it opened last would; the server notices each
        // close as it reads the connection's end.
        let closing = ContinuousClock.now
        while let fd = idle.popLast() { close(fd) }
        let closed = ContinuousClock.now
        // One request right after: how long the server takes to answer anyone again.
        guard let fd = TestSockets.connectLoopback(port: port) else { throw ValidationError("cannot connect after closing (errno \(errno))") }
        let answered = Self.request(fd, timeout: 120)
        close(fd)
        print(String(
            format: "closed them in %.2f s; the next fresh request was answered %.0f ms after%@", (closed - closing).seconds,
            (ContinuousClock.now - closed).seconds * 1000, (answered ? "" : " (no answer within 120 s)") as NSString))
        let after = await measure(port: port, serverPID: server.pid)
        report("right after", after, baseline: quiet)
    }

    private func report(_ name: String, _ phase: Phase, baseline: Phase) {
        print(String(
            format: "  %@ %7.0f requests/s (%.2f×)  api-server %6.1f µs CPU a request (%.2f×)%@",
            name.padding(toLength: 30, withPad: " ", startingAt: 0) as NSString, phase.rate, phase.rate / max(baseline.rate, 1), phase.serverMicroseconds,
            phase.serverMicroseconds / max(baseline.serverMicroseconds, 0.001),
            (phase.failures > 0 ? "  \(phase.failures) failed" : "") as NSString))
    }

    /// `clients` threads making fresh-connection requests for `seconds`.
    private func measure(port: Int, serverPID: Int32) async -> Phase {
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let before = LoadPhases.cpuTicks(String(serverPID))
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        let start = ContinuousClock.now
        let (done, failed) = await withTaskGroup(of: (Int, Int).self) { group in
            for _ in 0..<clients {
                group.addTask {
                    await TestEnvironment.offPool("bench-connections-client") {
                        var done = 0
                        var failed = 0
                        while ContinuousClock.now < deadline {
                            if let fd = TestSockets.connectLoopback(port: port) {
                                if Self.request(fd) { done += 1 } else { failed += 1 }
                                close(fd)
                            } else {
                                failed += 1
                            }
                        }
                        return (done, failed)
                    }
                }
            }
            return await group.reduce(into: (0, 0)) { $0.0 += $1.0; $0.1 += $1.1 }
        }
        let elapsed = (ContinuousClock.now - start).seconds
        let cpu = (LoadPhases.cpuTicks(String(serverPID)) - before) / ticks * 1e6
        return Phase(rate: Double(done) / elapsed, serverMicroseconds: cpu / Double(max(done, 1)), failures: failed)
    }

    /// Whether `GET /healthz` on `fd` answers 200, waiting at most `timeout` seconds for each read.
    static func request(_ fd: Int32, timeout: Int = 10) -> Bool {
        TestSockets.get(fd, path: "/healthz", timeout: timeout) == 200
    }
}
