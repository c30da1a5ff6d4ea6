import ArgumentParser
import Foundation
import GPUPlaneScheduling

/// `gpuplane-bench trace`: replays a GPU cluster trace through the placement pipeline with the
/// published schedulers' scoring and gpuplane's own (see `TraceReplay`).
struct TraceBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trace",
        abstract: "Replays a GPU cluster trace (Alibaba 2023 format) with random-fit, best-fit, GPU packing, FGD and gpuplane's scoring.")

    @Option(help: "The node list (sn,cpu_milli,memory_mib,gpu,model).")
    var nodes = "../shared/data/alibaba-gpu-trace-2023/openb_node_list_gpu_node.csv"

    @Option(help: "The pod list (name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,…).")
    var pods = "../shared/data/alibaba-gpu-trace-2023/openb_pod_list_default.csv"

    @Option(help: "Seeds (replays per policy), 1…N.")
    var seeds = 5

    @Option(help: "Replay on this many of the trace's nodes (drawn with a fixed seed) instead of all.")
    var sample: Int?

    @Option(parsing: .upToNextOption, help: "Policies, in order (default: all).")
    var policies: [String] = TraceReplay.Policy.allCases.map(\.rawValue)

    func run() async throws {
        let replay: TraceReplay
        do {
            replay = try TraceReplay(nodesFile: nodes, tasksFile: pods, sampleNodes: sample)
        } catch {
            throw ValidationError(error.description)
        }
        var chosen: [TraceReplay.Policy] = []
        for name in policies {
            guard let policy = TraceReplay.Policy(rawValue: name) else {
                throw ValidationError("unknown policy '\(name)'; known: \(TraceReplay.Policy.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            chosen.append(policy)
        }
        guard seeds >= 1 else { throw ValidationError("--seeds must be 1 or more") }
        print("\(replay.nodes.count) nodes, \(replay.gpus) GPUs; \(replay.tasks.count) tasks drawn from; seeds 1…\(seeds); every node scored per task")
        var results: [TraceReplay.Policy: [TraceReplay.Result]] = [:]
        for seed in 1...UInt64(seeds) {
            for policy in chosen {
                let result = try replay.run(policy, seed: seed)
                results[policy, default: []].append(result)
                FileHandle.standardError.write(Data(
                    "seed \(seed) \(policy.rawValue): \(percent(result.allocatedShare)) allocated, \(result.bound)/\(result.submitted) placed, \(Int(result.decisionsPerSecond)) decisions/s; dropped GPUs by task size: \(result.dropped.sorted { $0.key < $1.key }.map { "\($0.key) \(String(format: "%.1f", $0.value))" }.joined(separator: ", "))\n".utf8))
            }
        }
        print("| policy | GPU capacity allocated (mean) | per seed | unallocated GPUs (mean) | decisions/s |")
        print("| --- | ---: | --- | ---: | ---: |")
        for policy in chosen {
            let runs = results[policy] ?? []
            let share = runs.map(\.allocatedShare).reduce(0, +) / Double(max(runs.count, 1))
            let unallocated = runs.map(\.unallocatedGPUs).reduce(0, +) / Double(max(runs.count, 1))
            let rate = Double(runs.map(\.submitted).reduce(0, +)) / max(runs.map(\.seconds).reduce(0, +), 1e-9)
            let perSeed = runs.map { percent($0.allocatedShare) }.joined(separator: " ")
            print("| \(policy.rawValue) | \(percent(share)) | \(perSeed) | \(String(format: "%.1f", unallocated)) | \(Int(rate.rounded())) |")
        }
        if let mine = results[.gpuplane], let fgd = results[.fgd], let best = results[.bestFit] {
            let atLeastFGD = zip(mine, fgd).allSatisfy { $0.allocatedGPUs >= $1.allocatedGPUs }
            let aboveBestFit = zip(mine, best).allSatisfy { $0.allocatedGPUs > $1.allocatedGPUs }
            print("gpuplane ≥ fgd on every seed: \(atLeastFGD ? "yes" : "no"); gpuplane > best-fit on every seed: \(aboveBestFit ? "yes" : "no")")
        }
    }

    private func percent(_ share: Double) -> String { String(format: "%.2f%%", share * 100) }
}

/// `gpuplane-bench placement`: the pipeline alone, in process (`PlacementBenchmark`: a synthetic
/// fleet of dedicated, large and shared nodes, a batch of mixed replicas), with the scorers
/// before fragmentation-aware scoring and with the default ones, run alternately.
struct PlacementBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "placement",
        abstract: "Measures the placement pipeline's decisions/s in process, previous and default scorers alternately.")

    @Option(help: "Nodes.")
    var nodes = 1000

    @Option(help: "GPUs per node.")
    var gpus = 8

    @Option(help: "Replicas placed per run.")
    var replicas = 10_000

    @Option(help: "Runs of each score list (the median is reported).")
    var rounds = 3

    func run() async throws {
        var previous: [PlacementBenchmark.Report] = []
        var current: [PlacementBenchmark.Report] = []
        for _ in 0..<max(1, rounds) {
            previous.append(try PlacementBenchmark.measure(
                nodes: nodes, gpusPerNode: gpus, replicas: replicas, scores: Pipeline.packingScores))
            current.append(try PlacementBenchmark.measure(nodes: nodes, gpusPerNode: gpus, replicas: replicas))
        }
        print("| scorers | nodes × GPUs | replicas | bound | placements/s (median) | runs |")
        print("| --- | --- | ---: | ---: | ---: | --- |")
        for (label, reports) in [("previous (packing)", previous), ("default (fragmentation-aware)", current)] {
            let rates = reports.map(\.placementsPerSecond).sorted()
            let median = rates[rates.count / 2]
            print("| \(label) | \(nodes) × \(gpus) | \(replicas) | \(reports[0].bound) | \(Int(median.rounded())) | \(rates.map { String(Int($0.rounded())) }.joined(separator: " ")) |")
        }
    }
}
