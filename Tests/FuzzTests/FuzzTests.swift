import Foundation
import GPUPlaneCore
import GPUPlaneManifest
import GPUPlaneSystem
import Testing

@testable import StreamingJSON

@testable import EtcdClient
@testable import GPUPlaneAPI

/// Hostile input, generated: mutations of valid inputs (Mutator) thrown at every parser that
/// reads bytes from outside the process, each checked against an oracle, not only for not
/// crashing. A trap fails the run. Short and fixed in CI; the long form sets
/// GPUPLANE_FUZZ_ITERATIONS and GPUPLANE_FUZZ_SEED (docs/reliability.md).
///
/// Each run is on a thread of its own, one at a time: a CPU-bound loop on Swift's cooperative
/// pool (two threads here) starved every other test of the suite running beside it.
@Suite(.serialized, .timeLimit(.minutes(10))) struct FuzzTests {
    /// `bytes` parsed by Foundation when it is strict JSON: Foundation's parser also takes
    /// trailing commas, so the document must pass `JSONIndex`'s strict scan too.
    /// The value under exactly `key`, scalar by scalar: Swift compares `String`s by canonical
    /// equivalence, under which a key with a leading U+FEFF matched `"model"`, while the model
    /// servers behind the gateway (Python's json) see another key.
    static func exact(_ object: [String: Any]?, _ key: String) -> Any? {
        object?.first { $0.key.unicodeScalars.elementsEqual(key.unicodeScalars) }?.value
    }

    /// Keys other than exactly `key`, as scalar strings.
    static func keys(_ object: [String: Any]?, without key: String) -> Set<[UInt32]> {
        Set((object ?? [:]).keys.filter { !$0.unicodeScalars.elementsEqual(key.unicodeScalars) }.map { $0.unicodeScalars.map(\.value) })
    }

    static func strictJSON(_ bytes: [UInt8]) -> Any? {
        guard (try? JSONIndex(bytes)) != nil else { return nil }
        return try? JSONSerialization.jsonObject(with: Data(bytes), options: .fragmentsAllowed)
    }

    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// The manifest reader (YAML and JSON bodies of `apply`, `validate` and deployments): any
    /// bytes give findings, never a trap; every finding with a position points into the text.
    @Test func manifestReader() async throws {
        let reader = ManifestReader(context: ValidationContext(catalog: try Catalog.standard(), plan: .enterprise, gpuLimit: 8))
        let examples = Self.repository.appendingPathComponent("examples")
        var seeds = try FileManager.default.contentsOfDirectory(atPath: examples.path).sorted().filter { $0.hasSuffix(".yaml") }
            .map { Array(try Data(contentsOf: examples.appendingPathComponent($0))) }
        seeds.append(Array(#"{"application": {"name": "j", "pods": [{"name": "api", "image": "busybox", "servicePorts": [8000], "vars": {"A": {"secret": "s"}}}]}}"#.utf8))
        let deployment = Array(#"{"model_name": "m", "gpu": "H100-80GB", "num_gpus": 2, "max_batch_size": 8, "hf": {"repo": "org/m-7b"}, "settings": {"min_instances": 0, "max_instances": 3}}"#.utf8)
        var findings = 0
        let (count, failures) = await FuzzRun.run("manifest", seeds: seeds + [deployment]) { bytes, check in
            let data = Data(bytes)
            // YAML's line breaks: LF, CR LF, and a CR alone.
            let lines = 1 + bytes.indices.filter { bytes[$0] == 0x0A || (bytes[$0] == 0x0D && ($0 + 1 == bytes.count || bytes[$0 + 1] != 0x0A)) }.count
            let manifest = reader.read(data)
            let (_, deploymentFindings) = reader.readDeploymentBody(data)
            for diagnostic in manifest.diagnostics + deploymentFindings {
                findings += 1
                if let line = diagnostic.line {
                    check.check(
                        (1...lines + 1).contains(line),
                        "line \(line) of \(lines): \(diagnostic) in \(String(decoding: bytes, as: UTF8.self).debugDescription.prefix(3000))")
                }
                if let column = diagnostic.column { check.check(column >= 1, "\(diagnostic)") }
                check.check(!diagnostic.message.isEmpty, "an empty message: \(diagnostic)")
            }
        }
        #expect(failures.isEmpty, "\(failures.joined(separator: "\n"))")
        print("fuzz manifest reader: \(count) inputs, \(findings) findings, seed \(FuzzRun.seed)")
    }

    /// The decoder of what etcd and gpuplane write: wherever Foundation's `JSONDecoder` reads a
    /// value from well-formed JSON, `StreamingJSONDecoder` reads the same one; it never traps.
    @Test func streamingJSONDecoderAgreesWithFoundation() async throws {
        let header = #""header":{"cluster_id":"14841639068965178418","member_id":"10276657743932975437","revision":"1234","raft_term":"2"}"#
        let range = Array(#"{\#(header),"kvs":[{"key":"L2EvYg==","create_revision":"5","mod_revision":"9","version":"3","value":"eyJ4IjoxfQ==","lease":"7587869785"}],"more":true,"count":"2"}"#.utf8)
        let txn = Array(#"{\#(header),"succeeded":true,"responses":[{"response_put":{"header":{"revision":"1234"}}},{"response_range":{"header":{"revision":"1234"},"kvs":[{"key":"L2E=","create_revision":"5","mod_revision":"5","version":"1"}],"count":"1"}},{"response_delete_range":{"header":{"revision":"1234"},"deleted":"2"}}]}"#.utf8)
        let catalog = try Catalog.standard()
        let app = Application(
            metadata: ObjectMeta(name: "chat", tenant: "acme", uid: "u", labels: ["a": "b\"c"], created: Date(timeIntervalSince1970: 1_795_000_000)),
            spec: ApplicationSpec(pods: [Pod(name: "api", image: "busybox", vars: ["K": "v\u{1F680}\n"])]))
        let replica = Array(try GPUPlaneJSON.encode(try #require(ReplicaPlanner(catalog: catalog).replicas(for: app).first)))
        let tenant = Array(try GPUPlaneJSON.encode(Tenant(metadata: ObjectMeta(name: "acme"), spec: .init(plan: .pro, gpuLimit: 3))))
        let foundation = GPUPlaneJSON.decoder()
        var agreed = 0
        // Foundation's decoder reads some malformed documents (a truncated object whose
        // missing part it never needed); only well-formed JSON is held to agreement.
        func check<T: Decodable & Equatable>(_ type: T.Type, _ bytes: [UInt8], wellFormed: Bool, _ findings: Findings) {
            let data = Data(bytes)
            let ours = try? StreamingJSONDecoder.decode(type, from: data)
            guard wellFormed, let reference = try? foundation.decode(type, from: data) else { return }
            findings.check(ours == reference, "\(T.self) from \(String(decoding: bytes.prefix(400), as: UTF8.self))")
            agreed += 1
        }
        let (count, failures) = await FuzzRun.run("json", seeds: [range, txn, replica, tenant]) { bytes, findings in
            let wellFormed = Self.strictJSON(bytes) != nil
            check(Etcd.RangeResponse.self, bytes, wellFormed: wellFormed, findings)
            check(Etcd.TxnResponse.self, bytes, wellFormed: wellFormed, findings)
            check(Replica.self, bytes, wellFormed: wellFormed, findings)
            check(Tenant.self, bytes, wellFormed: wellFormed, findings)
        }
        #expect(failures.isEmpty, "\(failures.joined(separator: "\n"))")
        #expect(agreed > 0, "no input decoded at all: the oracle checked nothing")
        print("fuzz streaming JSON: \(count) inputs, \(agreed) decoded by Foundation and compared, seed \(FuzzRun.seed)")
    }

    /// The line splitter of etcd's watch, keep-alive and observe streams: however the bytes
    /// are chunked, the same lines come out as from one chunk.
    @Test func watchLinesSplitTheSameWhateverTheChunks() async {
        let watch = Array(
            (#"{"result":{"header":{"revision":"7"},"events":[{"kv":{"key":"L2E=","mod_revision":"7","value":"eA=="}}]}}"# + "\n"
                + #"{"result":{"header":{"revision":"8"},"events":[{"type":"DELETE","kv":{"key":"L2E=","mod_revision":"8"}}]}}"# + "\r\n  \n"
                + #"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader"}}"#).utf8)
        var chunks = SplitMix64(seed: FuzzRun.seed)
        var lines = 0
        let (count, failures) = await FuzzRun.run("lines", seeds: [watch]) { bytes, findings in
            var whole = LineSplitter()
            let expected = bytes.withUnsafeBytes { whole.append($0) } + [whole.flush()].compactMap { $0 }
            var split = LineSplitter()
            var got: [Data] = []
            var start = 0
            while start < bytes.count {
                let end = min(bytes.count, start + Int.random(in: 1...64, using: &chunks))
                got += bytes[start..<end].withUnsafeBytes { split.append($0) }
                start = end
            }
            got += [split.flush()].compactMap { $0 }
            findings.check(got == expected, "chunked \(got.count) lines, whole \(expected.count): \(String(decoding: bytes.prefix(300), as: UTF8.self))")
            lines += got.count
            // Each line decodes or is refused; never a trap.
            for line in got { _ = try? StreamingJSONDecoder.decode(StreamLine<Etcd.RangeResponse>.self, from: line) }
        }
        #expect(failures.isEmpty, "\(failures.joined(separator: "\n"))")
        print("fuzz watch lines: \(count) inputs, \(lines) lines, seed \(FuzzRun.seed)")
    }

    /// The gateway's one-scan `model` finder: it finds the top-level `model` exactly when
    /// Foundation's parser sees one, and pinning a name gives JSON whose top-level `model` is
    /// that name and whose other fields are unchanged.
    @Test func theGatewaysModelScannerMatchesAParser() async throws {
        let seeds = [
            #"{"model": "org/llama", "messages": [{"role": "user", "content": "hi", "model": "nested"}], "stream": true}"#,
            #"{"messages": [{"role": "user", "content": "{\"model\": \"x\"}"}], "max_tokens": 16}"#,
            #"  {  "temperature" : 0.5 , "model" : null }  "#,
            "{}", #"{"model":"a\"b\\c\u00e9"}"#,
        ].map { Array($0.utf8) }
        var found = 0
        let (count, failures) = await FuzzRun.run("model", seeds: seeds) { bytes, findings in
            // Foundation's parser drops a U+FEFF inside a string ("\u{FEFF}model" becomes the key
            // "model"); the model servers' parsers (Python's json) keep it, as the scanner does.
            let hasBOM = bytes.indices.contains { bytes[$0] == 0xEF && $0 + 2 < bytes.count && bytes[$0 + 1] == 0xBB && bytes[$0 + 2] == 0xBF }
            let parsed = hasBOM ? nil : Self.strictJSON(bytes) as? [String: Any]
            switch ModelField.scan(bytes) {
            case .found(let location):
                found += 1
                if let parsed {
                    findings.check(Self.exact(parsed, "model") != nil, "scan found a model the parser does not see: \(String(decoding: bytes, as: UTF8.self))")
                    if let name = Self.exact(parsed, "model") as? String { findings.check(location.string == name, "scan read \(location.string ?? "-"), the parser \(name)") }
                }
            case .absent:
                if let parsed { findings.check(Self.exact(parsed, "model") == nil, "scan missed the model: \(String(decoding: bytes, as: UTF8.self))") }
            case .notAnObject:
                findings.check(parsed == nil || hasBOM, "scan refused an object the parser reads: \(String(decoding: bytes, as: UTF8.self))")
            }
            guard let parsed, let pinned = ModelField.pinned(bytes, to: "tenant/model\"x") else { return }
            let after = Self.strictJSON(pinned) as? [String: Any]
            findings.check(Self.exact(after, "model") as? String == "tenant/model\"x", "pinned: \(String(decoding: pinned, as: UTF8.self))")
            findings.check(Self.keys(after, without: "model") == Self.keys(parsed, without: "model"), "pinning changed other keys: \(String(decoding: pinned, as: UTF8.self))")
        }
        #expect(failures.isEmpty, "\(failures.joined(separator: "\n"))")
        print("fuzz model scanner: \(count) inputs, \(found) with a model, seed \(FuzzRun.seed)")
    }
}
