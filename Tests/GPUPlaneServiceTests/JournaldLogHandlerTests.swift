import Foundation
import GPUPlaneService
import GPUPlaneTestSupport
import Logging
import Testing

enum PlacementFailure: Error { case noCapacity }

@Suite("journald logging")
struct JournaldLogHandlerTests {
    @Test(
        "a structured entry is read back from journald with all its fields",
        .enabled(if: JournaldFixture.isAvailable, "needs journald or root to start one"))
    func structuredEntryReachesJournald() async throws {
        try await JournaldFixture.shared.ensureRunning()
        let identifier = uniqueIdentifier("gpuplane-test-journald")
        let fallback = LineCollector()
        var logger = Logger(label: "gpuplane.scheduler") {
            JournaldLogHandler(label: $0, identifier: identifier, level: .debug, fallback: fallback.sink)
        }
        logger[metadataKey: "node"] = "gpu-node-7"
        logger.warning(
            "placement refused\nno GPU with 80 GB free", error: PlacementFailure.noCapacity,
            metadata: [
                "deployment": "acme/llama-70b", "replica": "2", "gpu.uuid": "GPU-5a1e",
                "reason": "first line\nsecond line",
            ])
        let line = #line - 6

        let entries = try await JournaldFixture.shared.waitForEntries(identifier: identifier)
        #expect(fallback.lines.isEmpty, "fell back to stderr: \(fallback.lines)")
        let entry = try #require(entries.first)
        #expect(entry["MESSAGE"] == "placement refused\nno GPU with 80 GB free")
        #expect(entry["PRIORITY"] == "4")
        #expect(entry["SYSLOG_IDENTIFIER"] == identifier)
        #expect(entry["LOGGER"] == "gpuplane.scheduler")
        #expect(entry["CODE_FILE"]?.hasSuffix("JournaldLogHandlerTests.swift") == true, "\(entry)")
        #expect(entry["CODE_LINE"] == "\(line)")
        #expect(entry.fields["CODE_FILE"]?.count == 1, "libsystemd added a location of its own: \(entry)")
        #expect(entry["CODE_FUNC"]?.hasPrefix("structuredEntryReachesJournald") == true, "\(entry)")
        #expect(entry["GPUPLANE_NODE"] == "gpu-node-7")
        #expect(entry["GPUPLANE_DEPLOYMENT"] == "acme/llama-70b")
        #expect(entry["GPUPLANE_REPLICA"] == "2")
        #expect(entry["GPUPLANE_GPU_UUID"] == "GPU-5a1e")
        #expect(entry["GPUPLANE_REASON"] == "first line\nsecond line")
        #expect(entry["GPUPLANE_ERROR"] == "noCapacity")
    }

    @Test(
        "levels map to syslog priorities in journald",
        .enabled(if: JournaldFixture.isAvailable, "needs journald or root to start one"))
    func prioritiesReachJournald() async throws {
        try await JournaldFixture.shared.ensureRunning()
        let identifier = uniqueIdentifier("gpuplane-test-priority")
        let logger = Logger(label: "gpuplane.test") {
            JournaldLogHandler(label: $0, identifier: identifier, level: .trace)
        }
        logger.critical("c")
        logger.error("e")
        logger.notice("n")
        logger.info("i")
        logger.debug("d")
        let entries = try await JournaldFixture.shared.waitForEntries(identifier: identifier, count: 5)
        let priorities = Dictionary(
            entries.compactMap { entry in entry["MESSAGE"].map { ($0, entry["PRIORITY"] ?? "") } },
            uniquingKeysWith: { first, _ in first })
        #expect(priorities == ["c": "2", "e": "3", "n": "5", "i": "6", "d": "7"])
    }

    @Test("without a journal socket, entries fall back to one stderr line each")
    func fallsBackToStderrFormat() throws {
        let lines = LineCollector()
        var logger = Logger(label: "gpuplane.scheduler") {
            JournaldLogHandler(
                label: $0, identifier: "gpuplane-scheduler",
                socketPath: "/nonexistent/gpuplane/journal.socket", fallback: lines.sink)
        }
        logger[metadataKey: "node"] = "gpu-node-7"
        logger.error(
            "bind failed", metadata: ["deployment": "acme/llama", "gpu": ["uuid": "GPU-1"], "why": "a \"b\"\nc"])
        logger.debug("below the level, dropped")

        #expect(lines.lines.count == 1)
        let line = try #require(lines.lines.first)
        let match = try #require(line.wholeMatch(of: /(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (.*)/))
        #expect(
            match.output.2
                == #"error gpuplane.scheduler: bind failed deployment=acme/llama gpu.uuid=GPU-1 node=gpu-node-7 why="a \"b\"\nc""#
        )
    }

    @Test("StderrLogHandler writes the same format")
    func stderrHandlerFormat() throws {
        let lines = LineCollector()
        let logger = Logger(label: "gpuplane.api") { StderrLogHandler(label: $0, output: lines.sink) }
        logger.info("listening", metadata: ["port": "8080", "empty": ""])
        let line = try #require(lines.lines.first)
        #expect(line.hasSuffix(#" info gpuplane.api: listening empty="" port=8080"#), "\(line)")
    }

    @Test(
        "metadata keys become GPUPLANE_ field names",
        arguments: [
            ("node", "GPUPLANE_NODE"), ("deployment", "GPUPLANE_DEPLOYMENT"), ("replica", "GPUPLANE_REPLICA"),
            ("gpu.uuid", "GPUPLANE_GPU_UUID"), ("max-batch size", "GPUPLANE_MAX_BATCH_SIZE"),
            ("_private", "GPUPLANE__PRIVATE"), ("9lives", "GPUPLANE_9LIVES"), ("né", "GPUPLANE_N_"),
            ("", "GPUPLANE_UNNAMED"),
        ])
    func fieldNames(key: String, expected: String) {
        #expect(JournalField.name(forMetadataKey: key) == expected)
    }

    @Test("field names are cut to journald's 64 characters")
    func longFieldNames() {
        let name = JournalField.name(forMetadataKey: String(repeating: "x", count: 100))
        #expect(name.count == 64)
        #expect(name.hasPrefix("GPUPLANE_XXX"))
    }

    @Test("bootstrap happens once per process")
    func bootstrapOnce() {
        // stderr, so loggers other tests create with swift-log's default factory stay out of the journal.
        let first = GPUPlaneLogging.bootstrap(identifier: "gpuplane-test", level: .info, destination: .stderr)
        let second = GPUPlaneLogging.bootstrap(identifier: "gpuplane-test", level: .debug)
        #expect(first)
        #expect(!second)
    }

    @Test("automatic destination follows the socket")
    func automaticDestination() {
        #expect(GPUPlaneLogging.resolve(.automatic, socketPath: "/nonexistent/socket") == .stderr)
        #expect(GPUPlaneLogging.resolve(.journald, socketPath: "/nonexistent/socket") == .journald)
        let handler = GPUPlaneLogging.makeHandler(
            label: "x", identifier: "x", destination: .automatic, socketPath: "/nonexistent/socket")
        #expect(handler is StderrLogHandler)
    }
}
