import Foundation
import Testing
@testable import GPUPlaneCore

@Suite struct CopyOnWriteTests {
    static func replica(_ name: String = "app-0-main") -> Replica {
        Replica(
            metadata: ObjectMeta(name: name, tenant: "acme"),
            spec: ReplicaSpec(
                owner: OwnerReference(kind: .application, name: "app-0", uid: "u-1"), role: "main", mode: .dedicated,
                modelSlug: nil, gpus: 1, vramGB: 24, machineTypes: ["GPU-H100"], priority: .inference,
                image: "registry.local/app:v1", env: ["A": "1"], ports: [8080]))
    }

    /// The scheduler and the api-server hold every replica several times over (informer map
    /// and list, pass, snapshot, caches): its spec and status must not be copied with it.
    @Test func replicasNodesAndModelServersCarryTheirSpecAndStatusOutOfLine() {
        // Each is its metadata, its binding (if it has one) and two pointers.
        let metadata = MemoryLayout<ObjectMeta>.stride
        let binding = MemoryLayout<Binding?>.stride
        #expect(MemoryLayout<Replica>.size <= metadata + binding + 3 * 8, "Replica is \(MemoryLayout<Replica>.size) bytes inline")
        #expect(MemoryLayout<ModelServer>.size <= metadata + binding + 2 * 8, "ModelServer is \(MemoryLayout<ModelServer>.size) bytes inline")
        #expect(MemoryLayout<Node>.size <= metadata + 2 * 8, "Node is \(MemoryLayout<Node>.size) bytes inline")
    }

    @Test func aCopyChangesAloneAndComparesByValue() {
        let original = Self.replica()
        var copy = original
        #expect(copy == original)
        copy.status.phase = .running
        copy.spec.env["B"] = "2"
        #expect(original.status.phase == .pending)
        #expect(original.spec.env == ["A": "1"])
        #expect(copy.status.phase == .running)
        #expect(copy.spec.env == ["A": "1", "B": "2"])
        #expect(copy != original)

        // Equal values in different boxes are equal and hash alike.
        var again = Self.replica()
        again.status.phase = .running
        again.spec.env["B"] = "2"
        #expect(again == copy)
        #expect(Set([again, copy]).count == 1)
    }

    /// What a replica was before its spec and status went out of line.
    struct InlineReplica: Codable {
        var metadata: ObjectMeta
        var spec: ReplicaSpec
        var binding: Binding?
        var status: ReplicaStatus
        var secretVersions: [String: String]?
    }

    @Test func theJSONIsTheSameAsInline() throws {
        var replica = Self.replica()
        replica.status.message = "waiting"
        replica.binding = Binding(node: "n1", gpuIndices: [3])
        let inline = InlineReplica(
            metadata: replica.metadata, spec: replica.spec, binding: replica.binding, status: replica.status,
            secretVersions: replica.secretVersions)
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        #expect(try encoder.encode(replica) == encoder.encode(inline))
        let back = try JSONDecoder().decode(Replica.self, from: encoder.encode(inline))
        #expect(back == replica)
    }
}
