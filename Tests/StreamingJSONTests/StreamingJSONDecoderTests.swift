import EtcdClient
import Foundation
import GPUPlaneCore
import GPUPlaneManifest
import StreamingJSON
import Testing

private func referenceDecoder() -> JSONDecoder {
    let decoder = JSONDecoder()
    decoder.dateDecodingStrategy = .iso8601
    return decoder
}

/// Both decoders read `json` as the same value, or both refuse it.
private func expectSameDecode<T: Decodable & Equatable>(
    _ type: T.Type, _ json: String, sourceLocation: SourceLocation = #_sourceLocation
) {
    let data = Data(json.utf8)
    let expected = Result { try referenceDecoder().decode(T.self, from: data) }
    let actual = Result { try StreamingJSONDecoder.decode(T.self, from: data) }
    switch (expected, actual) {
    case (.success(let e), .success(let a)): #expect(a == e, sourceLocation: sourceLocation)
    case (.failure, .failure): break
    case (.success(let e), .failure(let error)):
        Issue.record("JSONDecoder read \(e), StreamingJSONDecoder threw \(error) for \(json.prefix(200))", sourceLocation: sourceLocation)
    case (.failure(let error), .success(let a)):
        Issue.record("JSONDecoder threw \(error), StreamingJSONDecoder read \(a) for \(json.prefix(200))", sourceLocation: sourceLocation)
    }
}

/// What gpuplane wrote reads back the same through both decoders.
private func expectRoundTrip<T: Codable & Equatable>(_ value: T, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let json = String(decoding: try StreamingJSONEncoder.encode(value), as: UTF8.self)
    expectSameDecode(T.self, json, sourceLocation: sourceLocation)
    #expect(try StreamingJSONDecoder.decode(T.self, from: Data(json.utf8)) == value, sourceLocation: sourceLocation)
}

private struct Sample: Codable, Equatable {
    var name: String
    var count: Int
    var ratio: Double
    var flag: Bool
    var note: String?
    var tags: [String]
    var nested: [String: [Int]]
    var blob: Data
    var when: Date
}

@Suite struct StreamingJSONDecoderTests {
    @Test func scalarsAndStrings() {
        expectSameDecode(Int.self, "42")
        expectSameDecode(Int.self, "-9223372036854775808")
        expectSameDecode(UInt64.self, "18446744073709551615")
        expectSameDecode(Int8.self, "300")
        expectSameDecode(Int.self, "1.0")
        expectSameDecode(Int.self, "1.5")
        expectSameDecode(Int.self, "1e3")
        expectSameDecode(Double.self, "-0.25e-3")
        expectSameDecode(Double.self, "12345678901234567890")
        expectSameDecode(Bool.self, "true")
        expectSameDecode(String.self, #""plain""#)
        expectSameDecode(String.self, #""esc \" \\ \/ \b \f \n \r \t \u00e9 \ud83d\ude80 \u0000""#)
        expectSameDecode(String.self, "\"ünïcødé 🚀\"")
        expectSameDecode([Int?].self, "[1, null, 3]")
        expectSameDecode([String: Bool].self, #"{"a": true, "b": false}"#)
        expectSameDecode(Int.self, #""42""#)
        expectSameDecode(String.self, "42")
    }

    @Test func malformedJSONIsRefusedLikeJSONDecoder() {
        for json in ["", "{", "[1,", #"{"a" 1}"#, "[1 2]", "tru", "nul", #""open"#, "{} {}", #"{"a":1}x"#, "\"a\u{01}b\""] {
            expectSameDecode([String: Int].self, json)
            #expect(throws: (any Error).self) { try StreamingJSONDecoder.decode([String: Int].self, from: Data(json.utf8)) }
        }
        // Stricter than JSONDecoder, which lets a trailing comma pass.
        #expect(throws: (any Error).self) { try StreamingJSONDecoder.decode([String: Int].self, from: Data(#"{"a":1,}"#.utf8)) }
    }

    @Test func missingKeysAndWrongTypes() {
        expectSameDecode(Sample.self, #"{"name": "x"}"#)
        expectSameDecode(Sample.self, #"{"name": 1, "count": 1, "ratio": 1, "flag": true, "tags": [], "nested": {}, "blob": "", "when": "2026-11-23T01:02:03Z"}"#)
        expectSameDecode(
            Sample.self,
            #"{"name": "n", "count": 1, "ratio": 1, "flag": true, "tags": [], "nested": {}, "blob": "!!", "when": "2026-11-23T01:02:03Z"}"#)
        expectSameDecode(
            Sample.self,
            #"{"name": "n", "count": 1, "ratio": 1, "flag": true, "tags": [], "nested": {}, "blob": "", "when": "yesterday"}"#)
    }

    @Test func roundTrips() throws {
        try expectRoundTrip(
            Sample(
                name: "a \"b\" /c", count: -7, ratio: 0.1, flag: true, note: nil, tags: ["x", "y"],
                nested: ["k": [1, 2], "j": []], blob: Data((0..<200).map { UInt8($0) }),
                when: Date(timeIntervalSince1970: 1_795_000_000)))
        try expectRoundTrip(Dictionary(uniqueKeysWithValues: (0..<100).map { ("key-\($0)", $0) }))
    }

    /// Every kind of stored object, as written by the store.
    @Test func storedResources() throws {
        let catalog = try Catalog.standard()
        let examples = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("examples")
        for file in try FileManager.default.contentsOfDirectory(atPath: examples.path).sorted() where file.hasSuffix(".yaml") {
            let reader = ManifestReader(context: ValidationContext(catalog: catalog, plan: .enterprise))
            for case .application(let name, let spec) in reader.read(try Data(contentsOf: examples.appendingPathComponent(file))).objects {
                let app = Application(
                    metadata: ObjectMeta(
                        name: name, tenant: "acme", uid: "u", labels: ["a": "b"], created: Date(timeIntervalSince1970: 1_795_000_000)),
                    spec: spec)
                try expectRoundTrip(app)
                for replica in ReplicaPlanner(catalog: catalog).replicas(for: app) { try expectRoundTrip(replica) }
            }
        }
        try expectRoundTrip(Tenant(metadata: ObjectMeta(name: "acme"), spec: .init(plan: .pro, gpuLimit: 3)))
    }

    /// Damaged input only ever throws: every byte of a stored object flipped, dropped or cut
    /// off in turn, through both decoders, which must agree whenever both succeed.
    @Test func damagedInputThrowsAndNeverTraps() throws {
        let catalog = try Catalog.standard()
        let app = Application(
            metadata: ObjectMeta(name: "chat", tenant: "acme", uid: "u", labels: ["a": "b\"c"], created: Date(timeIntervalSince1970: 1_795_000_000)),
            spec: ApplicationSpec(pods: [Pod(name: "api", image: "busybox", vars: ["K": "v\u{1F680}\n"])]))
        let replica = try #require(ReplicaPlanner(catalog: catalog).replicas(for: app).first)
        let original = Array(try StreamingJSONEncoder.encode(replica))
        let replacements: [UInt8] = [0x00, 0x22, 0x5C, 0x7B, 0x7D, 0x5B, 0x5D, 0x2C, 0x3A, 0x30, 0x2D, 0x65, 0x75, 0xFF, 0x20]
        var variants: [[UInt8]] = []
        for position in original.indices {
            var flipped = original
            flipped[position] = replacements[position % replacements.count]
            variants.append(flipped)
            var dropped = original
            dropped.remove(at: position)
            variants.append(dropped)
            variants.append(Array(original[..<position]))
        }
        for bytes in variants {
            let data = Data(bytes)
            let ours = try? StreamingJSONDecoder.decode(Replica.self, from: data)
            if let ours, let reference = try? referenceDecoder().decode(Replica.self, from: data) {
                #expect(ours == reference)
            }
        }
    }

    /// The etcd gateway's answers, as it writes them (int64s as strings, base64 bytes, zero
    /// values left out).
    @Test func etcdAnswers() {
        let header = #""header":{"cluster_id":"14841639068965178418","member_id":"10276657743932975437","revision":"1234","raft_term":"2"}"#
        expectSameDecode(
            Etcd.TxnResponse.self,
            "{\(header),\"succeeded\":true,\"responses\":[{\"response_put\":{\"header\":{\"revision\":\"1234\"}}},{\"response_txn\":{\"header\":{},\"succeeded\":true,\"responses\":[{\"response_put\":{\"header\":{\"revision\":\"1234\"}}}]}},{\"response_range\":{\"header\":{\"revision\":\"1234\"},\"kvs\":[{\"key\":\"L2EvYg==\",\"create_revision\":\"5\",\"mod_revision\":\"9\",\"version\":\"3\",\"value\":\"eyJ4IjoxfQ==\"}],\"count\":\"1\"}},{\"response_delete_range\":{\"header\":{\"revision\":\"1234\"},\"deleted\":\"2\"}}]}")
        expectSameDecode(Etcd.TxnResponse.self, "{\(header)}")
        expectSameDecode(
            Etcd.RangeResponse.self,
            "{\(header),\"kvs\":[{\"key\":\"L2E=\",\"create_revision\":\"5\",\"mod_revision\":\"5\",\"version\":\"1\",\"lease\":\"7587869785\"}],\"more\":true,\"count\":\"12\"}")
        expectSameDecode(Etcd.RangeResponse.self, "{\(header),\"count\":\"x\"}")
        expectSameDecode(Etcd.PutResponse.self, "{\(header),\"prev_kv\":{\"key\":\"L2E=\",\"value\":\"\"}}")
    }
}
