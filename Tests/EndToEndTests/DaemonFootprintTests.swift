import CurlHTTP
import Foundation
import GPUPlaneSystem
import GPUPlaneTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Guards for what keeps the daemons' resident memory down (docs/benchmarks.md: the node-agent's
/// idle RSS goal, the daemons as shipped): the measurements themselves are benchmarks, but what
/// they rest on is checked on every build.
@Suite struct DaemonFootprintTests {

    /// The api-server hands the memory of a burst back (`memory-trim-interval`, here 1 s): 2,000
    /// connections, each answered once and then closed, leave its anonymous memory near where it
    /// was. glibc keeps freed pages resident otherwise, and an api-server that held its peer's
    /// nodes while that one was down stayed at the peak for good (docs/benchmarks.md, "Memory
    /// per connection"). Measured on the 2-core machine: without the trim all of the growth
    /// stays; with it 22-24 % (7 of 31.5 MB) stays, the tables NIO, Hummingbird and the
    /// connection shards grew to the burst's size (a Swift dictionary keeps its capacity) and the
    /// pages they and other live objects pin. Half is the line between the two.
    @Test(.enabled(if: EtcdFixture.isAvailable))
    func theApiServerHandsABurstsMemoryBack() async throws {
        let etcd = try await EtcdFixture.start()
        defer { etcd.shutdown() }
        let directory = try TestEnvironment.temporaryDirectory(prefix: "memory-trim")
        defer { try? FileManager.default.removeItem(at: directory) }
        let port = TestEnvironment.freePort()
        let api = try ChildProcess.daemon(
            "gpuplane-api-server", ["--port", "\(port)", "--max-connections-per-source", "0", "--memory-trim-interval", "1s"],
            etcd: etcd, in: directory)
        defer { api.stop(timeout: 10) }
        let http = CurlHTTP.Client(name: "memory-trim-test", maxConnections: 1)
        defer { http.shutdown() }
        try await eventually("the api-server answers", timeout: 60) {
            (try? await http.perform(CurlHTTP.Request(url: "http://127.0.0.1:\(port)/healthz", timeout: .seconds(5))))?.status == 200
        }
        func anonymousKiB() throws -> Int {
            let status = try String(contentsOfFile: "/proc/\(api.pid)/status", encoding: .utf8)
            let line = try #require(status.split(separator: "\n").first { $0.hasPrefix("RssAnon:") })
            return try #require(line.split(separator: " ").dropFirst().first.flatMap { Int($0) })
        }
        let before = try anonymousKiB()
        let opened = try await TestEnvironment.offPool { () throws -> [Int32] in
            var fds: [Int32] = []
            for _ in 0..<2_000 {
                guard let fd = TestSockets.connectLoopback(port: port) else { break }
                fds.append(fd)
                guard TestSockets.sendAll(fd, Array("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".utf8)[...]) else { break }
                // The answer (a few hundred bytes): read until its body is in.
                var answer: [UInt8] = []
                var buffer = [UInt8](repeating: 0, count: 4096)
                while !String(decoding: answer, as: UTF8.self).contains("}") {
                    let n = recv(fd, &buffer, buffer.count, 0)
                    guard n > 0 else { break }
                    answer += buffer[0..<n]
                }
            }
            return fds
        }
        #expect(opened.count == 2_000)
        let grown = try anonymousKiB() - before
        #expect(grown > 10_000, "2,000 connections added \(grown) KiB")
        for fd in opened { close(fd) }
        let last = Locked(0)
        do {
            try await eventually("the closed connections' memory handed back", timeout: 30) {
                let now = try anonymousKiB() - before
                last.withLock { $0 = now }
                return now < grown / 2
            }
        } catch {
            Issue.record("2,000 connections added \(grown) KiB; \(last.withLock { $0 }) KiB of it still held: \(api.logTail())")
            throw error
        }
        #expect(api.isRunning, "\(api.logTail())")
    }

    /// The scheduler runs on glibc's main malloc arena alone, as `SchedulerMain` caps it
    /// (docs/operations.md): the cap is set in `main` before the first `await`, since a thread
    /// that allocated before it (the first hop to the concurrency pool) keeps an arena of its
    /// own, which the cap set later inside `run()` had left behind.
    @Test(.enabled(if: EtcdFixture.isAvailable))
    func theSchedulerRunsOnOneMallocArena() async throws {
        let etcd = try await EtcdFixture.start()
        defer { etcd.shutdown() }
        let directory = try TestEnvironment.temporaryDirectory(prefix: "arenas")
        defer { try? FileManager.default.removeItem(at: directory) }
        let port = TestEnvironment.freePort()
        let scheduler = try ChildProcess.daemon(
            "gpuplane-scheduler", ["--identity", "arenas", "--listen", "127.0.0.1", "--port", "\(port)"], etcd: etcd, in: directory)
        defer { scheduler.stop(timeout: 10) }
        let http = CurlHTTP.Client(name: "arena-test", maxConnections: 1)
        defer { http.shutdown() }
        // Leading and serving its metrics: its threads have run and allocated.
        try await eventually("the scheduler serves its metrics", timeout: 60) {
            (try? await http.perform(CurlHTTP.Request(url: "http://127.0.0.1:\(port)/metrics", timeout: .seconds(5))))?.status == 200
        }
        #expect(try Self.mallocArenasBesidesMain(pid: scheduler.pid) == 0, "\(scheduler.logTail())")
        #expect(scheduler.isRunning)
    }

    /// glibc's malloc arenas other than the main one in process `pid`: each is an anonymous
    /// reservation of 64 MiB (`HEAP_MAX_SIZE`) aligned to its size, its used part read-write and
    /// the rest `---p`.
    static func mallocArenasBesidesMain(pid: Int32) throws -> Int {
        let maps = try String(contentsOfFile: "/proc/\(pid)/maps", encoding: .utf8)
        var regions: [(start: UInt64, end: UInt64)] = []
        for line in maps.split(separator: "\n") {
            let fields = line.split(separator: " ")
            // An anonymous mapping names no file: address, permissions, offset, device, inode.
            guard fields.count == 5 else { continue }
            let range = fields[0].split(separator: "-")
            guard range.count == 2, let start = UInt64(range[0], radix: 16), let end = UInt64(range[1], radix: 16) else { continue }
            regions.append((start, end))
        }
        let heap: UInt64 = 64 << 20
        var arenas = 0
        for (index, region) in regions.enumerated() where region.start % heap == 0 {
            var end = region.end
            var next = index + 1
            while end - region.start < heap, next < regions.count, regions[next].start == end {
                end = regions[next].end
                next += 1
            }
            if end - region.start == heap { arenas += 1 }
        }
        return arenas
    }
    /// `readelf` output for the built executable `name`.
    static func readelf(_ flag: String, _ name: String) throws -> String {
        let binary = LocalClusterTests.binaries.appendingPathComponent(name).path
        let (status, output) = try Command.run("/usr/bin/env", ["readelf", flag, "-W", binary])
        try #require(status == 0, "readelf \(flag) \(binary) failed: \(output)")
        return output
    }

    /// Foundation proper brings ICU (its data and code) into every resident set; the modules
    /// of the agent and of the scheduler use FoundationEssentials only. A new `import
    /// Foundation` in any module they link shows up here as a library the binary needs (in a
    /// build where every object was compiled after it: an object left from before keeps its
    /// old autolink entries).
    @Test(arguments: ["gpuplane-node-agent", "gpuplane-scheduler"])
    func doesNotLinkFoundation(_ daemon: String) throws {
        let needed = try Self.readelf("-d", daemon).split(separator: "\n").filter { $0.contains("(NEEDED)") }
        #expect(!needed.isEmpty, "readelf -d listed no libraries")
        for library in needed {
            #expect(!library.contains("libFoundation.so"), "\(daemon) links \(library)")
            #expect(!library.contains("libFoundationInternationalization"), "\(daemon) links \(library)")
            #expect(!library.contains("_FoundationICU"), "\(daemon) links \(library)")
        }
    }

    /// lld with `-z pack-relative-relocs` (`compactLinking`): relative relocations in a compact
    /// `.relr.dyn` instead of megabytes of `.rela.dyn`. (Its `--no-export-dynamic` shows only
    /// in a `--static-swift-stdlib` build, whose runtime symbols would otherwise be exported;
    /// the tests' build links the runtime dynamically.)
    @Test(arguments: ["gpuplane-node-agent", "gpuplane-scheduler", "gpuplane-api-server"])
    func isLinkedWithPackedRelocations(_ daemon: String) throws {
        let sections = try Self.readelf("-S", daemon)
        #expect(sections.contains(".relr.dyn"), "\(daemon) has no packed relocations")
    }

    /// lld's `--symbol-ordering-file` (`orderedLinking`): the functions a daemon ran in a bench
    /// (`Sources/<daemon>/symbol-order.txt`, made by scripts/symbol-order) open its `.text`, in
    /// the list's order, so the code it runs sits on few pages. Without the flag (or with an
    /// empty list) `.text` opens with the C runtime's `_start`, the first object linked.
    @Test(arguments: ["gpuplane-node-agent", "gpuplane-scheduler", "gpuplane-api-server"])
    func placesTheFunctionsItRunsFirst(_ daemon: String) throws {
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let listed = try String(contentsOf: repository.appendingPathComponent("Sources/\(daemon)/symbol-order.txt"), encoding: .utf8)
            .split(separator: "\n").map(String.init)
        #expect(listed.count > 1_000, "Sources/\(daemon)/symbol-order.txt lists \(listed.count) functions")

        // .text's section index (readelf -S), then its functions' addresses (readelf -s).
        let sections = try Self.readelf("-S", daemon).split(separator: "\n")
        let text = try #require(sections.first { $0.contains(" .text ") }, "\(daemon) has no .text")
        let textIndex = try #require(text.split(separator: "[").dropFirst().first?.split(separator: "]").first)
            .trimmingCharacters(in: .whitespaces)
        var addresses: [String: UInt64] = [:]
        for line in try Self.readelf("-s", daemon).split(separator: "\n") {
            // "  Num:    Value          Size Type    Bind   Vis      Ndx Name"
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 8, fields[3] == "FUNC", fields[6] == textIndex,
                let address = UInt64(fields[1], radix: 16)
            else { continue }
            addresses[String(fields[7])] = min(addresses[String(fields[7])] ?? .max, address)
        }
        let start = try #require(addresses.values.min(), "readelf -s listed no functions in \(daemon)'s .text")
        // A debug build lacks some of the listed functions (the release build's specializations).
        let first = try #require(listed.first { addresses[$0] != nil }, "\(daemon) has none of the listed functions")
        let opening = addresses.filter { $0.value == start }.map(\.key).sorted()
        // SwiftPM does not know the list is a linker input: a binary linked before the list
        // changed keeps the old order until something else relinks it.
        #expect(
            addresses[first] == start,
            "\(daemon)'s .text opens with \(opening), not with \(first), the first listed function it has (linked before the list changed? delete .build/<configuration>/\(daemon) and build again)")
    }
}
