import EtcdClient
import Foundation
import GPUPlaneCore
import GPUPlaneManifest
import StreamingJSON
import Testing

/// The reference: what the store and the API wrote before, and what clients may compare with.
private func reference<T: Encodable>(_ value: T) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    encoder.dateEncodingStrategy = .iso8601
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}

private func streamed<T: Encodable>(_ value: T) throws -> String {
    String(decoding: try StreamingJSONEncoder.encode(value), as: UTF8.self)
}

/// Both encoders agree, byte for byte.
private func expectSame<T: Encodable>(_ value: T, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let expected = try reference(value)
    let actual = try streamed(value)
    #expect(actual == expected, sourceLocation: sourceLocation)
}

private struct Empty: Codable {}

private struct Keys: Codable {
    var zeta = 1
    var alpha = "a"
    var Beta = true
    var _under: Int? = 4
    var missing: Int? = nil
    var nested = Inner()
    struct Inner: Codable { var y = [3, 1]; var x = ["b": 2, "a": 1] }
}

private enum Shape: Codable {
    case circle(radius: Double)
    case square(Int, label: String)
    case none
}

/// Uses every container kind by hand, including nested containers left open.
private struct Manual: Encodable {
    enum K: String, CodingKey { case b, a, list, sub, sup }
    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: K.self)
        var sub = c.nestedContainer(keyedBy: K.self, forKey: .sub)
        try sub.encode("inner", forKey: .b)
        var list = c.nestedUnkeyedContainer(forKey: .list)
        try list.encode(1)
        var deeper = list.nestedContainer(keyedBy: K.self)
        try deeper.encode(true, forKey: .a)
        try list.encodeNil()
        try c.encode("after", forKey: .b)
        try c.encodeNil(forKey: .a)
        _ = c.superEncoder(forKey: .sup)
    }
}

@Suite struct StreamingJSONTests {
    @Test func scalarsAndStrings() throws {
        try expectSame(0)
        try expectSame(Int.min)
        try expectSame(UInt64.max)
        try expectSame(true)
        try expectSame("plain")
        try expectSame(String((0..<128).map { Character(UnicodeScalar(UInt8($0))) }))
        try expectSame("ünïcødé 🚀 / \\ \"quoted\" \u{2028}")
        try expectSame([Int?.none, 1])
    }

    @Test func floatingPoint() throws {
        for value in [0.0, -0.0, 1.0, 1.5, 0.1, 1e21, 1e-7, 123_456_789.125, -3.75, Double(Int64.max), 5e-324] {
            try expectSame(value)
        }
        for value: Float in [0, 1.5, 0.1, 3.4e38] {
            try expectSame(value)
        }
        #expect(throws: EncodingError.self) { try StreamingJSONEncoder.encode(Double.nan) }
        #expect(throws: EncodingError.self) { try StreamingJSONEncoder.encode(["x": Double.infinity]) }
    }

    @Test func dataAndDates() throws {
        for count in 0..<8 { try expectSame(Data((0..<count).map { UInt8(truncatingIfNeeded: $0 * 89 + 7) })) }
        try expectSame(Data(repeating: 0xFF, count: 600))
        for seconds in [0.0, 1.9, -1.5, 951_782_400, 1_795_000_000.75, -62_135_596_800, -12_219_292_800, -12_219_292_801, 4_102_444_799] {
            try expectSame(Date(timeIntervalSince1970: seconds))
        }
        try expectSame(URL(string: "https://example.com/a?b=c"))
    }

    @Test func objectsSortByKeyBytes() throws {
        try expectSame(Keys())
        try expectSame(Empty())
        try expectSame([String: Int]())
        try expectSame(Dictionary(uniqueKeysWithValues: (0..<50).map { ("key-\($0 * 7919 % 97)", $0) }))
        try expectSame([10: "ten", 2: "two", 33: "x"])
        try expectSame(["B": 1, "a": 2, "_": 3, "é": 4, "aa": 5])
        try expectSame([[String: [String: Bool]]](repeating: ["z": ["y": true, "x": false]], count: 3))
    }

    /// `[String: String]`, `[String]` and `[Int]` take a direct path; it must write what the
    /// generic one (and `JSONEncoder`) does, keys needing escapes included (those fall back).
    @Test func directPathsForStringDictionariesAndArrays() throws {
        try expectSame([String: String]())
        try expectSame(["B": "1", "a": "two", "_": "", "é": "ü", "aa": "x\"y", "gpuplane.io/pod": "api", "Z9": "\n"])
        try expectSame(Dictionary(uniqueKeysWithValues: (0..<40).map { ("VAR_\($0 * 7919 % 97)", "value \($0)") }))
        try expectSame(["a\"b": "1", "a": "2", "a\\": "3", "tab\t": "4"])
        try expectSame(["outer": ["b": "1", "a": "2"]])
        try expectSame([String]())
        try expectSame(["b", "a", "\u{1}", "東京"])
        try expectSame([Int]())
        try expectSame([0, -1, 8000, Int.max, Int.min])
        try expectSame([[Int]](repeating: [1, 2], count: 3))
    }

    @Test func base64OfEveryLengthUpToTwenty() throws {
        for length in 0...20 {
            try expectSame(Data((0..<length).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }))
            try expectSame(["v": Data(repeating: 0xFF, count: length)])
        }
    }

    @Test func enumsAndNestedContainers() throws {
        try expectSame([Shape.circle(radius: 2.5), .square(3, label: "s"), .none])
        try expectSame(Manual())
    }

    /// Every kind of object the store writes, as built by the code that writes them.
    @Test func storedResources() throws {
        let catalog = try Catalog.standard()
        let examples = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("examples")
        var applications = 0
        for file in try FileManager.default.contentsOfDirectory(atPath: examples.path).sorted() where file.hasSuffix(".yaml") {
            let data = try Data(contentsOf: examples.appendingPathComponent(file))
            let reader = ManifestReader(context: ValidationContext(catalog: catalog, plan: .enterprise))
            for object in reader.read(data).objects {
                switch object {
                case .application(let name, let spec):
                    var app = Application(
                        metadata: ObjectMeta(
                            name: name, tenant: "acme", uid: "u-\(name)", labels: ["team": "ml", "app": name],
                            created: Date(timeIntervalSince1970: 1_795_000_000.5)),
                        spec: spec)
                    app.metadata.resourceVersion = "42"
                    try expectSame(app)
                    for replica in ReplicaPlanner(catalog: catalog).replicas(for: app) { try expectSame(replica) }
                    applications += 1
                default:
                    break
                }
            }
        }
        #expect(applications >= 4)
        try expectSame(catalog.models)
        try expectSame(Tenant(metadata: ObjectMeta(name: "acme"), spec: .init(plan: .pro, gpuLimit: 3)))
        let devices = (0..<8).map { GPUDevice(index: $0, uuid: "GPU-\($0)", product: "NVIDIA H100 80GB HBM3", memoryMiB: 81_559) }
        try expectSame(
            Node(
                metadata: ObjectMeta(name: "gpu-1", labels: [Node.gpuModeLabel: "dedicated", Node.machineTypeLabel: "GPU-H100"]),
                spec: NodeSpec(machineType: "GPU-H100", gpus: devices, unschedulable: false),
                status: NodeStatus(
                    conditions: [Condition(type: "Ready", status: true)],
                    gpuHealth: devices.map { GPUHealth(uuid: $0.uuid, healthy: $0.index != 3) })))
    }

    /// The etcd gateway's requests, which the client now writes with this encoder.
    @Test func etcdRequests() throws {
        let keys = [Data("/gpuplane/applications/acme/chat".utf8), Data("/gpuplane/replicas/acme/chat.api".utf8)]
        let txn = Etcd.TxnRequest(
            compare: keys.map { Etcd.Compare(.key($0), .equal, .createRevision(0)) }
                + [Etcd.Compare(.key(keys[0]), .less, .modRevision(77))],
            success: keys.map { .put(Etcd.PutRequest(key: $0, value: Data(repeating: 0x61, count: 450), lease: 9)) }
                + [.deleteRange(Etcd.DeleteRangeRequest(.prefix(Data("/x/".utf8))))],
            failure: keys.map { .range(Etcd.RangeRequest(.key($0), limit: 1, keysOnly: true)) })
        try expectSame(txn)
        try expectSame(Etcd.RangeRequest(.prefix(Data("/gpuplane/".utf8)), revision: 5, limit: 500))
    }
}
