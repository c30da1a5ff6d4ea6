import Foundation
import GPUPlaneTestSupport
import Testing

/// Guards for what keeps the node-agent's idle RSS under its goal (docs/benchmarks.md): the
/// measurement itself is a benchmark, but what it rests on is checked on every build.
@Suite struct AgentFootprintTests {
    /// `readelf` output for the built agent.
    static func readelf(_ flag: String) throws -> String {
        let binary = LocalClusterTests.binaries.appendingPathComponent("gpuplane-node-agent").path
        let (status, output) = try Command.run("/usr/bin/env", ["readelf", flag, "-W", binary])
        try #require(status == 0, "readelf \(flag) \(binary) failed: \(output)")
        return output
    }

    /// Foundation proper brings ICU (its data and code) into every resident set; the agent's
    /// modules use FoundationEssentials only. A new `import Foundation` in any module the agent
    /// links shows up here as a library the binary needs.
    @Test func agentDoesNotLinkFoundation() throws {
        let needed = try Self.readelf("-d").split(separator: "\n").filter { $0.contains("(NEEDED)") }
        #expect(!needed.isEmpty, "readelf -d listed no libraries")
        for library in needed {
            #expect(!library.contains("libFoundation.so"), "the agent links \(library)")
            #expect(!library.contains("libFoundationInternationalization"), "the agent links \(library)")
            #expect(!library.contains("_FoundationICU"), "the agent links \(library)")
        }
    }

    /// lld with `-z pack-relative-relocs`: relative relocations in a compact `.relr.dyn`
    /// instead of ~2 MB of `.rela.dyn`.
    @Test func agentIsLinkedWithPackedRelocations() throws {
        let sections = try Self.readelf("-S")
        #expect(sections.contains(".relr.dyn"))
    }
}
