import Foundation
import GPUPlaneCore
import GPUPlaneTestSupport
import Testing
@testable import GPUPlaneScheduling

/// The trace replay of `gpuplane-bench trace` on a sample of the Alibaba GPU trace
/// (Tests/Data/alibaba-gpu-trace-2023-sample): gpuplane's default scoring packs at least as
/// much as FGD and more than best-fit; the CSV reader names the line and column of a bad value.
@Suite struct TraceReplayTests {
    static let sample = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Data/alibaba-gpu-trace-2023-sample")

    static func replay() throws -> TraceReplay {
        try TraceReplay(
            nodesFile: sample.appendingPathComponent("nodes.csv").path,
            tasksFile: sample.appendingPathComponent("pods.csv").path)
    }

    @Test func readsTheSampleAndMapsItsShapes() throws {
        let replay = try Self.replay()
        #expect(replay.nodes.count == 102)
        #expect(replay.gpus == 498)
        #expect(replay.tasks.count == 2038)
        let fleet = replay.fleet()
        let g2 = try #require(fleet.first { $0.spec.machineType == "GPU-G2" })
        #expect(g2.metadata.labels[Node.gpuModeLabel] == NodeState.mixedModeLabel)
        #expect(g2.spec.gpus.count == 8 && g2.spec.gpus.allSatisfy { $0.memoryGB == 16 })
        #expect(g2.spec.allocatableCPUMilli == 96000)

        // A 0.47 share of a 16 GB GPU is an 8 GB shared server; whole GPUs any VRAM; CPU pods CPU.
        let share = TraceTask(name: "s", cpuMilli: 6000, memoryMiB: 12288, gpus: 1, gpuMilli: 470, gpuSpec: [])
        #expect(replay.request(for: share, draw: 0).demand == .shared(slug: "trace-0", vramGB: 8))
        #expect(replay.request(for: share, draw: 0).fixedResources == ComputeResources(cpuMilli: 6000, memoryMB: 12288))
        let whole = TraceTask(name: "w", cpuMilli: 32000, memoryMiB: 1, gpus: 8, gpuMilli: 1000, gpuSpec: ["V100M32", "G3"])
        let request = replay.request(for: whole, draw: 1)
        #expect(request.demand == .wholeGPUs(count: 8, vramGB: 0))
        #expect(request.machineTypes == ["GPU-V100-32GB", "GPU-G3"])
        let cpu = TraceTask(name: "c", cpuMilli: 8000, memoryMiB: 30517, gpus: 0, gpuMilli: 0, gpuSpec: [])
        #expect(replay.request(for: cpu, draw: 2).demand == .cpu(cpuMilli: 8000, memoryMB: 30517))
    }

    @Test func defaultScoringPacksAtLeastAsMuchAsFGDAndMoreThanBestFit() async throws {
        let replay = try Self.replay()
        let results = try await TestEnvironment.offPool {
            try [TraceReplay.Policy.bestFit, .fgd, .gpuplane].map { try replay.run($0, seed: 1) }
        }
        let (bestFit, fgd, gpuplane) = (results[0], results[1], results[2])
        for result in results {
            // The protocol: demand arrives until it reaches the fleet's capacity.
            #expect(result.arrivedGPUs >= Double(replay.gpus))
            #expect(result.arrivedGPUs - Double(replay.gpus) <= 8)
            #expect(result.allocatedGPUs <= Double(replay.gpus))
            #expect(result.bound > 0 && result.bound <= result.submitted)
        }
        #expect(gpuplane.allocatedGPUs >= fgd.allocatedGPUs, "gpuplane \(gpuplane.allocatedShare) < FGD \(fgd.allocatedShare)")
        #expect(gpuplane.allocatedGPUs > bestFit.allocatedGPUs, "gpuplane \(gpuplane.allocatedShare) ≤ best-fit \(bestFit.allocatedShare)")
    }

    @Test func theSameSeedReplaysTheSame() async throws {
        let replay = try Self.replay()
        let (first, second) = try await TestEnvironment.offPool {
            (try replay.run(.gpuplane, seed: 7), try replay.run(.gpuplane, seed: 7))
        }
        #expect(first.allocatedGPUs == second.allocatedGPUs)
        #expect(first.bound == second.bound && first.submitted == second.submitted)
    }

    @Test func aBadValueIsNamedByLineAndColumn() {
        let models = TraceReplay.knownModels
        let header = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos\n"
        #expect {
            _ = try TraceFile.tasks(csv: header + "a,1000,10,1,500,,LS\nb,1000,10,x,500,,LS\n", file: "pods.csv", knownModels: models)
        } throws: { error in
            guard let error = error as? TraceFileError else { return false }
            return error.code == .badNumber && error.line == 3 && error.column == 4 && error.columnName == "num_gpu"
                && error.description.hasPrefix("pods.csv:3:4 (num_gpu)")
        }
        #expect {
            _ = try TraceFile.tasks(csv: header + "a,1000,10,2,500,,LS\n", file: "pods.csv", knownModels: models)
        } throws: { error in
            (error as? TraceFileError).map { $0.code == .inconsistent && $0.line == 2 && $0.columnName == "gpu_milli" } ?? false
        }
        #expect {
            _ = try TraceFile.tasks(csv: header + "a,1000,10,1,500,H100,LS\n", file: "pods.csv", knownModels: models)
        } throws: { error in
            (error as? TraceFileError).map { $0.code == .unknownGPUModel && $0.column == 6 } ?? false
        }
        #expect {
            _ = try TraceFile.tasks(csv: header + "a,1000,10\n", file: "pods.csv", knownModels: models)
        } throws: { error in
            (error as? TraceFileError).map { $0.code == .missingField && $0.line == 2 } ?? false
        }
        #expect {
            _ = try TraceFile.nodes(csv: "sn,cpu_milli,gpu,model\nn1,1000,2,T4\n", file: "nodes.csv", knownModels: models)
        } throws: { error in
            (error as? TraceFileError).map { $0.code == .missingColumn && $0.columnName == "memory_mib" } ?? false
        }
        #expect {
            _ = try TraceFile.nodes(csv: "sn,cpu_milli,memory_mib,gpu,model\nn1,1000,10,2,TPU\n", file: "nodes.csv", knownModels: models)
        } throws: { error in
            (error as? TraceFileError).map { $0.code == .unknownGPUModel && $0.line == 2 && $0.column == 5 } ?? false
        }
        #expect {
            _ = try TraceFile.tasks(at: "/nonexistent/pods.csv", knownModels: models)
        } throws: { error in
            (error as? TraceFileError).map { $0.code == .unreadable && $0.description.hasPrefix("/nonexistent/pods.csv: ") } ?? false
        }
        // Columns in another order, extra ones, CRLF line ends: read.
        let nodes = try? TraceFile.nodes(
            csv: "model,gpu,sn,extra,memory_mib,cpu_milli\r\nG2,8,n1,x,393216,96000\r\n", file: "nodes.csv", knownModels: models)
        #expect(nodes == [TraceNode(name: "n1", cpuMilli: 96000, memoryMiB: 393216, gpus: 8, model: "G2")])
    }
}
