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
}
