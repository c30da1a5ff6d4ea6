import Foundation
import GPUPlaneTestSupport
import Testing

/// Guards for what keeps the daemons' resident memory down (docs/benchmarks.md: the node-agent's
/// idle RSS goal, the daemons as shipped): the measurements themselves are benchmarks, but what
/// they rest on is checked on every build.
@Suite struct DaemonFootprintTests {
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
