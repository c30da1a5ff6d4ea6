import Foundation
import GPUPlaneSystem
import GPUPlaneTestSupport

/// Structure-aware mutations of valid inputs: flips, insertions of tokens that matter to JSON
/// and YAML parsers (brackets, quotes, escapes, anchors, tags, huge and odd numbers, invalid
/// UTF-8, NUL), deletions, duplications, truncations and nesting bombs.
struct Mutator {
    var rng: SplitMix64

    static let tokens: [[UInt8]] = [
        "{", "}", "[", "]", ":", ",", "\"", "\\", "\\u0000", "\\ud800", "null", "true", "false", "-0", "1e309", "-1e309",
        "9223372036854775807", "9223372036854775808", "-9223372036854775809", "0.000000001", "NaN", "\"model\"", "\"model\":",
        "&a", "*a", "!!binary", "!!python/object", "---", "...", "- ", "? ", "| ", "> ", "\n", "\r\n", "\t", "#", "%YAML 1.1\n",
        "<<: *a", "\"\u{1F600}\"", "\u{202E}", " ", "''", "application:", "pods:", "gpu:", "name: x", "replicas: 1",
    ].map { Array($0.utf8) } + [[0xFF], [0xC3], [0xED, 0xA0, 0x80], [0x00], [0xEF, 0xBB, 0xBF]]

    init(seed: UInt64) { rng = SplitMix64(seed: seed) }

    mutating func int(_ range: Range<Int>) -> Int { Int.random(in: range, using: &rng) }

    /// One to four mutations of `input`.
    mutating func mutate(_ input: [UInt8]) -> [UInt8] {
        var bytes = input
        for _ in 0..<int(1..<5) {
            let at = bytes.isEmpty ? 0 : int(0..<(bytes.count + 1))
            switch int(0..<9) {
            case 0 where !bytes.isEmpty:  // flip a bit
                let i = min(at, bytes.count - 1)
                bytes[i] ^= UInt8(1 << int(0..<8))
            case 1, 2:  // insert a token
                bytes.insert(contentsOf: Self.tokens[int(0..<Self.tokens.count)], at: at)
            case 3 where !bytes.isEmpty:  // delete a range
                let end = min(bytes.count, at + int(1..<16))
                if at < end { bytes.removeSubrange(at..<end) }
            case 4 where !bytes.isEmpty:  // duplicate a range
                let start = int(0..<bytes.count)
                let end = min(bytes.count, start + int(1..<64))
                bytes.insert(contentsOf: Array(bytes[start..<end]), at: at)
            case 5 where !bytes.isEmpty:  // truncate
                bytes.removeSubrange(at..<bytes.count)
            case 6:  // a nesting bomb
                let open = int(0..<2) == 0 ? Array("[".utf8) : Array("{\"a\":".utf8)
                let depth = int(1..<3000)
                bytes.insert(contentsOf: Array(repeating: open, count: depth).flatMap { $0 }, at: at)
            case 7:  // a long run of one token
                let token = Self.tokens[int(0..<Self.tokens.count)]
                bytes.insert(contentsOf: Array(repeating: token, count: int(2..<500)).flatMap { $0 }, at: at)
            default:  // replace a byte with a token
                if !bytes.isEmpty {
                    let i = min(at, bytes.count - 1)
                    bytes.replaceSubrange(i...i, with: Self.tokens[int(0..<Self.tokens.count)])
                }
            }
        }
        return bytes
    }
}

/// How many inputs each target gets and from which seed: a short, fixed run in CI;
/// `GPUPLANE_FUZZ_ITERATIONS` and `GPUPLANE_FUZZ_SEED` for the long form (docs/reliability.md).
enum FuzzRun {
    static var iterations: Int {
        ProcessInfo.processInfo.environment["GPUPLANE_FUZZ_ITERATIONS"].flatMap(Int.init) ?? 5_000
    }
    static var seed: UInt64 {
        ProcessInfo.processInfo.environment["GPUPLANE_FUZZ_SEED"].flatMap(UInt64.init) ?? 20_261_204
    }

    /// Runs `body` on the seeds and on `iterations` mutations of them, the same ones for the
    /// same ``seed``, on a thread of its own (never Swift's cooperative pool, which the other
    /// tests need); returns how many inputs ran and the first failures `body` reported.
    static func run(_ target: String, seeds: [[UInt8]], _ body: @escaping ([UInt8], Findings) -> Void) async -> (count: Int, failures: [String]) {
        let work = Unchecked(body)
        let iterations = iterations, seed = seed
        return await TestEnvironment.offPool("fuzz-\(target)") {
            let findings = Findings()
            // A stable salt per target (String.hashValue changes from run to run).
            let salt = target.utf8.reduce(UInt64(5381)) { ($0 &* 33) &+ UInt64($1) }
            var mutator = Mutator(seed: seed ^ salt)
            var corpusSeed = SplitMix64(seed: seed &+ salt)
            for seedInput in seeds { work.value(seedInput, findings) }
            for _ in 0..<iterations {
                let base = seeds[Int.random(in: 0..<seeds.count, using: &corpusSeed)]
                work.value(mutator.mutate(base), findings)
            }
            return (seeds.count + iterations, findings.messages)
        }
    }
}

/// What a fuzz target found wrong: the first 20 messages.
final class Findings: @unchecked Sendable {
    private(set) var messages: [String] = []

    /// Records `message` unless `ok`.
    func check(_ ok: Bool, _ message: @autoclosure () -> String) {
        if !ok, messages.count < 20 { messages.append(message()) }
    }
}

/// A value moved to the fuzz thread; the test waits for that thread, so nothing runs at once.
final class Unchecked<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
