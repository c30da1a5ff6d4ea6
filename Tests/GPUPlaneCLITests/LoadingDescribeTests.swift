import Foundation
@testable import GPUPlaneCLI
import GPUPlaneCore
import Testing

/// How `gpuplane describe` and `gpuplane get modelservers` show a serving replica's loading
/// stage, from the JSON the api-server answers (a ReplicaStatus encoded as gpuplane encodes it).
@Suite struct LoadingDescribeTests {
    func json(_ status: ReplicaStatus, name: String) throws -> JSONValue {
        let replica = Replica(
            metadata: ObjectMeta(name: name, tenant: "t"),
            spec: ReplicaSpec(
                owner: OwnerReference(kind: .deployment, name: "chat", uid: "u"), role: "0", mode: .dedicated, modelSlug: nil, gpus: 1,
                vramGB: 80, machineTypes: [], priority: .inference, image: "img"),
            status: status)
        return try JSONDecoder().decode(JSONValue.self, from: JSONEncoder().encode(replica))
    }

    @Test func describeShowsStageTimesAndTheEnginesLastLines() throws {
        var fetching = ReplicaStatus(phase: .starting, reason: .fetchingWeights)
        fetching.loading = LoadingStatus(stage: .fetching, message: "fetching weights 3.2/16.1 GB", bytesDone: 3_200_000_000, bytesTotal: 16_100_000_000)
        #expect(DescribeCommand.loadingLines(try json(fetching, name: "deploy.chat.0")) == ["  deploy.chat.0: fetching — fetching weights 3.2/16.1 GB"])

        var ready = ReplicaStatus(phase: .running)
        ready.loading = LoadingStatus(stage: .ready, fetchSeconds: 12.34, loadSeconds: 4.5)
        #expect(DescribeCommand.loadingLines(try json(ready, name: "deploy.chat.1")) == ["  deploy.chat.1: ready (fetch 12.3 s, load 4.5 s)"])

        var exited = ReplicaStatus(phase: .failed, reason: .crashLoopBackOff)
        exited.loading = LoadingStatus(
            stage: .failed, message: "container exited with code 1", fetchSeconds: 0, reason: .engineExited,
            logTail: ["loading model", "ValueError: bad GGUF"])
        #expect(DescribeCommand.loadingLines(try json(exited, name: "deploy.chat.2")) == [
            "  deploy.chat.2: failed (EngineExited) — container exited with code 1 (fetch 0.0 s)",
            "    engine's last lines:", "      loading model", "      ValueError: bad GGUF",
        ])
    }
}
