import Foundation
import GPUPlaneCore
import GPUPlaneTestSupport
import Testing
@testable import GPUPlaneScheduling

/// The vLLM command lines gpuplane writes, checked against vLLM's own CLI argument definitions
/// (`vllm serve`'s parser, read from the pinned release's wheel by scripts/vllm-cli-check.py:
/// flag names, value kinds, choices and bounds), so no flag is misspelled, outdated or given
/// a value vLLM refuses.
@Suite("vLLM command lines against vLLM's own argument definitions", .serialized)
struct VLLMArgumentTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The pinned release's wheel: in `$GPUPLANE_WHEELS` (default /opt/gpuplane-wheels,
    /// where scripts/install-deps downloads it), else downloaded there by pip now; nil when
    /// neither works (no network to a package index): the tests are then skipped.
    static let wheel: String? = {
        let directory = ProcessInfo.processInfo.environment["GPUPLANE_WHEELS"] ?? "/opt/gpuplane-wheels"
        func find() -> String? {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
            return names.sorted().first { $0.hasPrefix("vllm-\(VLLM.version)-") && $0.hasSuffix(".whl") }
                .map { directory + "/" + $0 }
        }
        if let found = find() { return found }
        _ = try? Command.run(
            "/usr/bin/python3",
            ["-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps", "-d", directory, "vllm==\(VLLM.version)"],
            timeout: .seconds(600))
        return find()
    }()

    struct Line: Encodable {
        var name: String
        var args: [String]
    }

    struct Answer: Decodable {
        struct Problem: Decodable {
            var name: String
            var problem: String
        }
        var version: String?
        var flags: Int?
        var problems: [Problem]?
        var error: String?
    }

    /// Runs the checker over `lines`.
    /// Off the cooperative pool: the checker reads a 239 MB wheel, and a test blocking one of
    /// this 2-core machine's two pool threads for that long stalled every other suite.
    static func check(_ lines: [Line]) async throws -> Answer {
        let input = String(decoding: try JSONEncoder().encode(lines), as: UTF8.self)
        let script = root.appendingPathComponent("scripts/vllm-cli-check.py").path
        let ran: (status: Int32, output: String)? = try await TestEnvironment.offPool {
            guard let wheel = Self.wheel else { return nil }
            return try Command.run("/usr/bin/python3", [script, wheel], input: input, timeout: .seconds(300))
        }
        let (status, output) = try #require(ran, "no vLLM wheel")
        let last = output.split(separator: "\n").last.map(String.init) ?? ""
        let answer = try JSONDecoder().decode(Answer.self, from: Data(last.utf8))
        #expect(status == 0, "vllm-cli-check.py: \(output)")
        #expect(answer.error == nil, "\(answer.error ?? "")")
        return answer
    }

    /// Every GPU catalog model's server as the scheduler writes it, on every GPU machine type
    /// its mode can use (Mode 3 packed, with its share of the GPU's memory; Mode 2 whole).
    static func catalogLines() throws -> [Line] {
        let catalog = try Catalog.standard()
        var lines: [Line] = []
        for model in catalog.models where model.engine == .vllm {
            for type in MachineTypeTable.standard.types where type.family == .gpu {
                let needed = model.mode == .largePinned ? max(model.vramGB, PlacementRequest.largeSlotMinimumGB) : model.vramGB
                guard type.vramGB >= needed else { continue }
                let plan = ModelServerPlan(
                    name: "\(model.slug)-n-gpu0", slug: model.slug, mode: model.mode, vramGB: model.vramGB, node: "n",
                    gpuIndex: 0, gpuVRAMGB: type.vramGB)
                let serving = try #require(plan.modelServer(catalog: catalog).spec.serving)
                #expect(serving.image == VLLM.image, "\(model.slug)")
                lines.append(Line(name: "\(model.slug) on \(type.name)", args: serving.args))
            }
        }
        return lines
    }

    /// Deployment instances (vLLM over 1 to 8 whole GPUs, with and without a revision).
    static func deploymentLines() throws -> [Line] {
        let planner = ReplicaPlanner(catalog: try Catalog.standard())
        var lines: [Line] = []
        for gpus in [1, 2, 4, 8] {
            for revision in [nil, "0e9e39f249a16976918f6564b8830bc894c89659"] {
                let deployment = Deployment(
                    metadata: ObjectMeta(name: "d\(gpus)", tenant: "acme", uid: "u"),
                    spec: DeploymentSpec(
                        modelName: "my-llama", gpu: "GPU-H100", numGPUs: gpus, maxBatchSize: 24,
                        hf: HuggingFaceWeights(repo: "acme/llama-ft", revision: revision), settings: DeploymentSettings(minInstances: 0, maxInstances: 1)))
                let replica = planner.replica(for: deployment, index: 0)
                #expect(replica.spec.image == VLLM.image)
                lines.append(Line(name: "deployment on \(gpus) GPUs", args: replica.spec.command ?? []))
            }
        }
        return lines
    }

    @Test(
        "every GPU catalog model's and every deployment's command line parses with vLLM's own definitions",
        .enabled(if: wheel != nil, "vLLM's wheel is neither in $GPUPLANE_WHEELS (scripts/install-deps downloads it) nor downloadable with pip"))
    func everyCommandLineIsValid() async throws {
        let catalog = try Self.catalogLines()
        // Every GPU model of the catalog is there, Mode 3 ones on several GPU sizes.
        let slugs = Set(catalog.map { $0.name.components(separatedBy: " on ")[0] })
        #expect(slugs == Set(try Catalog.standard().models.filter { $0.engine == .vllm }.map(\.slug)))
        #expect(catalog.contains { $0.args.contains("--gpu-memory-utilization") })
        let answer = try await Self.check(catalog + (try Self.deploymentLines()))
        #expect(answer.version == VLLM.version)
        #expect((answer.flags ?? 0) > 100, "the definitions read: \(answer.flags ?? 0) flags")
        let problems = (answer.problems ?? []).map { "\($0.name): \($0.problem)" }
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
    }

    /// The check can fail: a misspelled flag, an outdated one (`--task` is gone from vLLM's
    /// parser), a value outside vLLM's bounds and one not among its choices are all reported.
    @Test(
        "misspelled, outdated and out-of-range arguments are reported",
        .enabled(if: wheel != nil, "vLLM's wheel is neither in $GPUPLANE_WHEELS (scripts/install-deps downloads it) nor downloadable with pip"))
    func badArgumentsAreReported() async throws {
        let answer = try await Self.check([
            Line(name: "misspelled", args: ["--model", "x", "--max-num-seq", "8"]),
            Line(name: "outdated", args: ["--model", "x", "--task", "embed"]),
            Line(name: "share", args: ["--gpu-memory-utilization", "1.5"]),
            Line(name: "tp", args: ["--tensor-parallel-size", "0"]),
            Line(name: "quantization", args: ["--quantization", "fp7"]),
            Line(name: "fine", args: ["--model", "x", "--served-model-name", "x", "--max-num-seqs", "8"]),
        ])
        let problems = Dictionary(grouping: answer.problems ?? [], by: \.name)
        #expect(problems["misspelled"]?.contains { $0.problem.contains("--max-num-seq is not a vLLM") } == true)
        #expect(problems["outdated"]?.contains { $0.problem.contains("--task is not a vLLM") } == true)
        #expect(problems["share"]?.contains { $0.problem.contains("bounds") } == true)
        #expect(problems["tp"]?.contains { $0.problem.contains("bounds") } == true)
        #expect(problems["quantization"]?.contains { $0.problem.contains("not one of") } == true)
        #expect(problems["fine"] == nil)
    }

    /// scripts/install-deps downloads the release the catalog pins (it reads VLLM.version).
    @Test func installDepsReadsThePinnedVersion() throws {
        let script = try String(contentsOf: Self.root.appendingPathComponent("scripts/install-deps"), encoding: .utf8)
        #expect(script.contains("vllm==$VLLM_VERSION"))
        let source = try String(
            contentsOf: Self.root.appendingPathComponent("Sources/GPUPlaneCore/ServingEngine.swift"), encoding: .utf8)
        #expect(source.contains("public static let version = \"\(VLLM.version)\""))
    }
}
