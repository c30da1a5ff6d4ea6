import Foundation
import Testing
@testable import GPUPlaneCore

/// The stored kinds keep their fields in a ``CopyOnWrite`` box: a copy costs a reference, a
/// change to one copy never shows in another, and the JSON is the fields' own.
@Suite struct CopyOnWriteTests {
    private func replica() -> Replica {
        var replica = Replica(
            metadata: ObjectMeta(name: "r1", tenant: "acme", uid: "u1", resourceVersion: "7", labels: ["a": "b"]),
            spec: ReplicaSpec(
                owner: OwnerReference(kind: .application, name: "app", uid: "u0"), role: "main", mode: .dedicated,
                modelSlug: nil, gpus: 1, vramGB: 80, machineTypes: ["GPU-H100"], priority: .inference, image: "img:1"),
            binding: Binding(node: "n1", gpuIndices: [3], modelServer: nil, leaderRevision: 5))
        replica.secretVersions = ["db": "2"]
        return replica
    }

    @Test func aCopyIsSmallAndSharesTheFieldsUntilAChange() {
        #expect(MemoryLayout<Replica>.size == MemoryLayout<Int>.size)
        #expect(MemoryLayout<Node>.size == MemoryLayout<Int>.size)
        #expect(MemoryLayout<ModelServer>.size == MemoryLayout<Int>.size)
        let box = CopyOnWrite([1, 2, 3])
        var copy = box
        #expect(copy.isSameBox(as: box))
        copy.value.append(4)
        #expect(!copy.isSameBox(as: box))
        #expect(box.value == [1, 2, 3])
        #expect(copy.value == [1, 2, 3, 4])
    }

    @Test func aChangeToACopyNeverShowsInTheOriginal() {
        let original = replica()
        var copy = original
        copy.status.phase = .running
        copy.metadata.labels["c"] = "d"
        copy.binding?.gpuIndices.append(4)
        copy.secretVersions = nil
        copy.spec.env["K"] = "V"
        #expect(original.status.phase == .pending)
        #expect(original.metadata.labels == ["a": "b"])
        #expect(original.binding?.gpuIndices == [3])
        #expect(original.secretVersions == ["db": "2"])
        #expect(original.spec.env.isEmpty)
        #expect(copy != original)
        var back = copy
        back.status.phase = .pending
        back.metadata.labels["c"] = nil
        back.binding?.gpuIndices = [3]
        back.secretVersions = ["db": "2"]
        back.spec.env = [:]
        // Equal by value in separate boxes, and hashed alike.
        #expect(back == original)
        #expect(back.hashValue == original.hashValue)
    }

    @Test func theJSONIsTheFieldsAtTheTopLevel() throws {
        let original = replica()
        let data = try GPUPlaneJSON.encode(original)
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(Set(object.keys) == ["metadata", "spec", "binding", "status", "secretVersions"])
        #expect(try GPUPlaneJSON.decode(Replica.self, from: data) == original)

        let node = Node(
            metadata: ObjectMeta(name: "n1"),
            spec: NodeSpec(machineType: "GPU-H100", gpus: [GPUDevice(index: 0, uuid: "GPU-0", product: "H100", memoryMiB: 81_559)]))
        let nodeData = try GPUPlaneJSON.encode(node)
        let nodeObject = try #require(try JSONSerialization.jsonObject(with: nodeData) as? [String: Any])
        #expect(Set(nodeObject.keys) == ["metadata", "spec", "status"])
        #expect(try GPUPlaneJSON.decode(Node.self, from: nodeData) == node)
    }
}
