import Foundation
import GPUPlaneCore
import GPUPlaneManifest
import Testing

@Suite struct PodRuleTests {
    @Test func namesAreDNSLabelsAndUnique() throws {
        let manifest = read("""
            application:
              name: My_App
              pods:
                - {name: api, image: a/b:1}
                - {name: api, image: a/b:1}
                - {name: Web, image: a/b:1}
            """)
        #expect(manifest.codes.filter { $0 == .invalidName }.count == 2)
        let dup = try #require(manifest.first(.duplicateName))
        #expect(dup.path == "application.pods[1].name")
        #expect(dup.message.contains("pods[0]"))
        #expect(manifest.first(.invalidName)?.message.contains("try 'my-app'") == true)
    }

    @Test func imagesParse() throws {
        let manifest = read(app(pod: "").replacingOccurrences(of: "myorg/app:v1", with: "MyOrg/App:v1"))
        #expect(try #require(manifest.first(.invalidImage)).path == "application.pods[0].image")
    }

    @Test func portsInRangeAndUnique() throws {
        let manifest = read(app(pod: "servicePorts: [8000, 0, 65536, 8000]"))
        #expect(manifest.codes == [.invalidPort, .invalidPort, .duplicatePort])
        let port = try #require(manifest.first(.invalidPort))
        #expect(port.path == "application.pods[0].servicePorts[1]")
        #expect((port.line, port.column) == (6, 28))
    }

    @Test func portsMustBeNumbers() throws {
        let manifest = read(app(pod: "servicePorts: [\"8000\", http]"))
        #expect(manifest.codes == [.typeMismatch, .typeMismatch])
        #expect(manifest.diagnostics[0].message.contains("remove the quotes"))
    }

    @Test func pathsStartWithSlash() {
        #expect(read(app(pod: "path: api")).codes == [.invalidPath])
    }

    @Test func varsAreNamesAndNotReserved() {
        let manifest = read(app(pod: "vars:\n  9LIVES: x\n  NXL_GPU_INDEX: '3'\n  OK_1: 5"))
        #expect(manifest.codes == [.invalidVar, .reservedVar])
        guard case .application(_, let spec)? = reader().read(Data(app(pod: "vars:\n  PORT: 5\n  EMPTY:").utf8)).objects.first else {
            Issue.record("expected an application"); return
        }
        #expect(spec.pods[0].vars == ["PORT": "5", "EMPTY": ""])
    }

    @Test func unknownFieldsSuggestTheKnownOne() throws {
        let manifest = read(app(pod: "servicePort: [80]\nimagePullPolicy: Always"))
        #expect(manifest.codes == [.unknownField, .unknownField])
        #expect(manifest.diagnostics[0].message.contains("did you mean 'servicePorts'"))
        #expect(!manifest.diagnostics[1].message.contains("did you mean"))
        #expect(manifest.diagnostics[1].message.contains("known fields here"))
    }

    @Test func machineTypesOneOrAnOrderedList() throws {
        #expect(read(app(pod: "gpu: {enabled: true, model: llama-3.1-8b}\nmachineType: GPU-L40")).isValid)
        let list = read(app(pod: "gpu: {enabled: true, model: llama-3.1-8b}\nmachineType: [GPU-RTX4090, GPU-L40, GPU-H100]"))
        guard case .application(_, let spec)? = list.objects.first else { Issue.record("no app"); return }
        #expect(spec.pods[0].machineTypes == ["GPU-RTX4090", "GPU-L40", "GPU-H100"])
        #expect(read(app(pod: "machineType: M")).isValid)
        #expect(read(app(pod: "machine_type: M")).isValid)
    }

    @Test func machineTypesMustFitThePod() throws {
        let small = read(app(pod: "gpu: {enabled: true, model: custom, memoryGB: 80}\nmachineType: GPU-L40"))
        #expect(try #require(small.first(.machineTypeMismatch)).message.contains("pick GPU-H100 or larger"))
        #expect(read(app(pod: "machineType: GPU-H100")).codes == [.machineTypeMismatch])
        #expect(read(app(pod: "gpu: {enabled: true, model: auto}\nmachineType: XL")).codes == [.machineTypeMismatch])
        // Mode 2 needs a 96 GB-class slot: an H100 (80 GB) cannot hold it.
        #expect(read(app(pod: "gpu: {enabled: true, model: llama-3.3-70b}\nmachineType: GPU-H100")).codes == [.machineTypeMismatch])
        let typo = read(app(pod: "machineType: GPU-H1000"))
        #expect(try #require(typo.first(.unknownMachineType)).message.contains("did you mean 'GPU-H100'"))
    }

    @Test func perUserGPULimitOnApplications() throws {
        let manifest = read("""
            application:
              name: big
              pods:
                - {name: a, image: x, gpu: {enabled: true, model: custom, memoryGB: 80, count: 4}}
                - {name: b, image: x, gpu: {enabled: true, model: llama-3.3-70b}}
                - {name: c, image: x, gpu: {enabled: true, model: llama-3.1-8b}}
            """)
        let d = try #require(manifest.first(.gpuLimitExceeded))
        #expect(d.message.contains("ask for 4") == false)
        #expect(d.message.contains("5 whole GPUs"))
        #expect(d.message.contains("limit is 4"))
    }

    @Test func applicationNeedsPods() {
        #expect(read("application:\n  name: x\n  pods: []").codes == [.noPods])
        #expect(read("application:\n  name: x").codes == [.missingField])
        #expect(read("application:\n  pods: [{name: a, image: b}]").codes == [.missingField])
    }

    @Test func everyErrorIsReportedAtOnce() {
        let manifest = read("""
            application:
              name: Bad_Name
              pods:
                - name: api
                  image: myorg/chat-backend:v1
                  model: llama-3.3-70b
                  servicePorts: [8000, 70000]
                  gpu:
                    model: llama-3.3-70b
                    priorty: inference
                - name: trainer
                  image: myorg/custom-trainer:v1
                  useGPU: true
            """, plan: .pro)
        #expect(Set(manifest.codes) == [.invalidName, .modelAtPodRoot, .invalidPort, .gpuEnabledMissing, .planEntitlement, .unknownField, .useGPUDeprecated])
        // Sorted by position.
        let lines = manifest.diagnostics.compactMap(\.line)
        #expect(lines == lines.sorted())
    }
}

@Suite struct DocumentTests {
    @Test func compilerStylePositionsAndFile() throws {
        let manifest = read(app(pod: "gpu:\n  enabled: true\n  model: llama-3.1-8b\n  memoryGB: 24"), file: "app.yaml")
        let d = try #require(manifest.first(.memoryGBNotAllowed))
        #expect(d.description.hasPrefix("app.yaml:9:19: error: application.pods[0].gpu.memoryGB: "))
    }

    @Test func severalDocumentsPerFile() {
        let manifest = read("""
            application:
              name: one
              pods: [{name: a, image: x}]
            ---
            application:
              name: two
              pods: [{name: a, image: x, servicePorts: [0]}]
            ---
            deployment:
              model_name: m
              gpu: H100-80GB
              max_batch_size: 8
              hf: {repo: org/model}
            """)
        #expect(manifest.objects.count == 2)
        #expect(manifest.codes == [.invalidPort])
        #expect(manifest.diagnostics[0].line == 7)
    }

    @Test func jsonIsAccepted() throws {
        let manifest = read(#"{"application": {"name": "j", "pods": [{"name": "a", "image": "x:1", "servicePorts": [80], "gpu": {"enabled": true, "model": "auto"}}]}}"#)
        #expect(manifest.isValid, "\(manifest.diagnostics)")
        let bad = read("{\"application\": {\"name\": \"j\",\n \"pods\": [{\"name\": \"a\", \"image\": \"x\", \"gpu\": {\"enabled\": \"yes\"}}]}}")
        let d = try #require(bad.first(.typeMismatch))
        #expect((d.line, d.column) == (2, 58))
    }

    @Test func syntaxErrorsHaveAPosition() throws {
        let manifest = read("application:\n  name: x\n  pods:\n   - name: a\n  image: [unclosed\n")
        let d = try #require(manifest.diagnostics.first)
        #expect(d.code == .syntax)
        #expect(d.line != nil && d.column != nil)
        let tabs = read("application:\n\tname: x\n")
        #expect(tabs.diagnostics.first?.message.contains("tabs") == true)
    }

    @Test func duplicateKeysAreRefused() throws {
        let manifest = read("application:\n  name: a\n  name: b\n  pods: []\n")
        let d = try #require(manifest.diagnostics.first)
        #expect(d.code == .syntax)
        #expect(d.message.contains("appears twice"))
        #expect(d.line == 3)
    }

    /// Past 16 keys a mapping's duplicate check moves to a dictionary; both stages refuse.
    @Test func duplicateKeysAreRefusedInLargeMappings() throws {
        for duplicateAt in [5, 17, 30] {
            let vars = (0..<40).map { "      K\($0): v" }
            var lines = vars
            lines.insert("      K2: again", at: duplicateAt)
            let yaml = "application:\n  name: a\n  pods:\n  - name: p\n    image: busybox\n    vars:\n" + lines.joined(separator: "\n") + "\n"
            let d = try #require(read(yaml).diagnostics.first)
            #expect(d.message.contains("'K2' appears twice"))
            #expect(d.line == 7 + duplicateAt)
        }
        #expect(read("application:\n  name: a\n  pods:\n  - name: p\n    image: busybox\n    vars:\n" + (0..<40).map { "      K\($0): v" }.joined(separator: "\n") + "\n").diagnostics.allSatisfy { !$0.message.contains("twice") })
    }

    @Test func unknownTopLevelKey() throws {
        let manifest = read("aplication:\n  name: x\n")
        #expect(try #require(manifest.first(.unknownDocument)).message.contains("did you mean 'application'"))
        #expect(read("").codes == [.emptyDocument])
        #expect(read("- 1\n- 2").codes == [.typeMismatch])
        #expect(read("application: 5").codes == [.typeMismatch])
    }
}

@Suite struct HostileInputTests {
    @Test func oversizeDocuments() throws {
        let big = "application:\n  name: x\n  pods: []\n#" + String(repeating: "a", count: 1 << 20)
        let manifest = read(big)
        #expect(manifest.codes == [.documentTooLarge])
        #expect(try #require(manifest.diagnostics.first).message.contains("1 MiB"))
    }

    @Test func deepNesting() throws {
        let deep = String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)
        let manifest = read(deep)
        #expect(manifest.codes == [.tooDeep])
        let blockDeep = (0..<200).map { String(repeating: "  ", count: $0) + "k\($0):" }.joined(separator: "\n")
        #expect(read(blockDeep).codes == [.tooDeep])
    }

    @Test func billionLaughs() throws {
        var yaml = "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
        for i in 1...9 {
            let refs = Array(repeating: "*a\(i - 1)", count: 10).joined(separator: ", ")
            yaml += "a\(i): &a\(i) [\(refs)]\n"
        }
        let manifest = read(yaml)
        #expect(manifest.codes == [.aliasExpansion])
    }

    @Test func smallAliasesStillWork() {
        let manifest = read("""
            application:
              name: x
              pods:
                - &pod {name: a, image: x, vars: &vars {A: "1"}}
                - {name: b, image: x, vars: *vars}
            """)
        #expect(manifest.isValid, "\(manifest.diagnostics)")
    }

    @Test func unknownAlias() {
        #expect(read("a: *nope").codes == [.syntax])
    }

    @Test func invalidUTF8() throws {
        var bytes = Array("application:\n  name: caf".utf8)
        bytes += [0xC3, 0x28]
        let manifest = reader().read(Data(bytes), file: "x.yaml")
        let d = try #require(manifest.diagnostics.first)
        #expect(d.code == .invalidEncoding)
        #expect((d.line, d.column) == (2, 12))
        #expect(reader().read(Data([0xFF, 0xFE, 0x00])).codes == [.invalidEncoding])
    }

    @Test func manyKeysInOneMappingStayCheap() {
        // Duplicate detection is by hash, so 30,000 keys read in linear time.
        let yaml = "application:\n" + (0..<30_000).map { "  k\($0): 1" }.joined(separator: "\n")
        let manifest = read(yaml)
        #expect(manifest.codes.contains(.unknownField))
    }

    @Test func garbageNeverCrashes() {
        var generator = SystemRandomNumberGenerator()
        let alphabet = Array("{}[]:,-&*!|>'\"#%@` \n\tabc123")
        for _ in 0..<300 {
            let length = Int.random(in: 0..<200, using: &generator)
            let text = String((0..<length).map { _ in alphabet.randomElement(using: &generator) ?? "a" })
            _ = read(text)
        }
    }
}

@Suite struct DeploymentManifestTests {
    /// The create request of reference/custom-llm-deployments.txt.
    @Test func theReferenceCreateRequest() throws {
        let body = #"{"model_name": "test-model", "gpu": "A100-80GB", "num_gpus": 2, "max_batch_size": 64, "hf": {"repo": "meta-llama/Llama-2-7b-chat-hf"}, "settings": {"min_instances": 0, "max_instances": 1}}"#
        let (spec, diagnostics) = reader().readDeploymentBody(Data(body.utf8))
        #expect(diagnostics.isEmpty, "\(diagnostics)")
        let s = try #require(spec)
        #expect(s.modelName == "test-model")
        #expect(s.gpu == "A100-80GB")
        #expect(s.numGPUs == 2)
        #expect(s.maxBatchSize == 64)
        #expect(s.hf.repo == "meta-llama/Llama-2-7b-chat-hf")
        #expect(s.settings == DeploymentSettings(minInstances: 0, maxInstances: 1))
        // The stored JSON uses the same field names.
        let json = String(decoding: try GPUPlaneJSON.encoder().encode(s), as: UTF8.self)
        #expect(json.contains(#""model_name":"test-model""#) && json.contains(#""min_instances":0"#))
    }

    func body(_ fields: String) -> Data {
        Data(#"{"model_name": "m", "gpu": "H100-80GB", "max_batch_size": 8, "hf": {"repo": "org/model-7b"}, \#(fields)}"#.utf8)
    }

    func codes(_ fields: String, gpuLimit: Int = 4) -> [DiagnosticCode] {
        reader(gpuLimit: gpuLimit).readDeploymentBody(body(fields)).1.errors.map(\.code)
    }

    @Test func gpuTypeMustBeAMachineType() throws {
        #expect(codes(#""num_gpus": 1"#) == [])
        let (_, d) = reader().readDeploymentBody(Data(#"{"model_name": "m", "gpu": "H100-80G", "max_batch_size": 8, "hf": {"repo": "a/b"}}"#.utf8))
        #expect(d.first?.code == .unknownGPUType)
        #expect(d.first?.message.contains("did you mean") == true)
        #expect(d.first?.path == "gpu")
        #expect((d.first?.line, d.first?.column) == (1, 28))
    }

    @Test func weightsMustFitWithRoomForKVCache() throws {
        let (_, d) = reader().readDeploymentBody(Data(#"{"model_name": "m", "gpu": "A100-80GB", "num_gpus": 1, "max_batch_size": 8, "hf": {"repo": "meta-llama/Llama-2-70b-chat-hf"}}"#.utf8))
        let fit = try #require(d.first { $0.code == .weightsDoNotFit })
        #expect(fit.message.contains("use num_gpus: 3 or more"))
        // 7B in fp16 is 14 GB: one 80 GB GPU is plenty.
        #expect(codes(#""num_gpus": 1"#) == [])
        // An explicit size wins over the name.
        #expect(codes(#""num_gpus": 1, "weights_gb": 75"#) == [.weightsDoNotFit])
    }

    @Test func batchAndInstances() {
        #expect(reader().readDeploymentBody(Data(#"{"model_name": "m", "gpu": "H100", "max_batch_size": 0, "hf": {"repo": "a/b"}}"#.utf8)).1.errors.map(\.code) == [.invalidBatchSize])
        #expect(codes(#""settings": {"min_instances": 2, "max_instances": 1}"#) == [.invalidInstances])
        #expect(codes(#""settings": {"min_instances": -1, "max_instances": 1}"#) == [.invalidInstances])
        #expect(codes(#""num_gpus": 0"#) == [.numGPUsOutOfRange])
    }

    @Test func perUserGPULimit() throws {
        // 4 instances × 1 GPU or 1 instance × 4 GPUs fit; 3 × 2 does not.
        #expect(codes(#""num_gpus": 1, "settings": {"min_instances": 4, "max_instances": 4}"#) == [])
        #expect(codes(#""num_gpus": 4, "settings": {"min_instances": 1, "max_instances": 1}"#) == [])
        #expect(codes(#""num_gpus": 2, "settings": {"min_instances": 3, "max_instances": 3}"#) == [.gpuLimitExceeded])
        #expect(codes(#""num_gpus": 5"#) == [.gpuLimitExceeded])
        #expect(codes(#""num_gpus": 2, "settings": {"min_instances": 3, "max_instances": 3}"#, gpuLimit: 8) == [])
        // Scaling past the limit is allowed but warned about.
        let (_, d) = reader().readDeploymentBody(body(#""num_gpus": 2, "settings": {"min_instances": 1, "max_instances": 4}"#))
        #expect(d.first?.severity == .warning)
        #expect(d.first?.message.contains("scaling will stop at 2 instances") == true)
    }

    @Test func requiredFieldsAndTokens() {
        let (_, d) = reader().readDeploymentBody(Data(#"{"gpu": "H100"}"#.utf8))
        #expect(Set(d.map(\.code)) == [.missingField])
        #expect(Set(d.map(\.path)) == ["model_name", "max_batch_size", "hf"])
        let (_, t) = reader().readDeploymentBody(Data(#"{"model_name": "m", "gpu": "H100", "max_batch_size": 1, "hf": {"repo": "a/b", "token": "hf_secret"}}"#.utf8))
        #expect(t.map(\.code) == [.invalidWeights])
        #expect(!t[0].message.contains("hf_secret"))
    }

    @Test func deploymentDocumentsInManifests() {
        let manifest = read("deployment:\n  model_name: bad name\n  gpu: H100\n  max_batch_size: 1\n  hf: {repo: a/b}\n")
        #expect(manifest.codes == [.invalidModelName])
        #expect(manifest.diagnostics[0].path == "deployment.model_name")
        #expect(manifest.diagnostics[0].line == 2)
    }
}
