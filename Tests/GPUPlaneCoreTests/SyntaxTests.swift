import Foundation
import Testing
@testable import GPUPlaneCore

@Suite struct SyntaxTests {
    @Test(arguments: ["api", "my-chat-backend", "a", "x1", String(repeating: "a", count: 63)])
    func dnsLabels(name: String) { #expect(Syntax.isDNSLabel(name)) }

    @Test(arguments: ["", "Api", "-api", "api-", "my_app", "a.b", String(repeating: "a", count: 64), "ünï"])
    func notDNSLabels(name: String) { #expect(!Syntax.isDNSLabel(name)) }

    @Test(arguments: [
        "myorg/chat-backend:v1", "busybox", "localhost:5000/team/app:1.2.3",
        "ghcr.io/org/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "registry.example.com/a/b/c", "vllm/vllm-openai:v0.6.3",
    ])
    func imageReferencesParse(reference: String) throws {
        #expect(try ImageReference(parsing: reference).description == reference)
    }

    @Test(arguments: [
        "", "My/App", "app:", "app:-bad", "a b", "app@sha256:xyz", "//app", "app//x", "a\tb", "app\u{00A0}x",
        "app@sha256:" + String(repeating: "A", count: 64), "ünï/app", "app:vé", "my_host.io/app", "app:" + String(repeating: "1", count: 129),
    ])
    func imageReferencesRejected(reference: String) {
        #expect(throws: ImageReference.ParseError.self) { try ImageReference(parsing: reference) }
    }

    @Test func imageReferenceParts() throws {
        let ref = try ImageReference(parsing: "localhost:5000/team/app:1.2")
        #expect(ref.registry == "localhost:5000")
        #expect(ref.repository == "team/app")
        #expect(ref.tag == "1.2")
    }

    @Test func suggestions() {
        #expect(Suggest.closest(to: "priorty", among: ["enabled", "model", "priority"]) == "priority")
        #expect(Suggest.closest(to: "memorygb", among: ["memoryGB", "count"]) == "memoryGB")
        #expect(Suggest.closest(to: "servicePort", among: ["servicePorts", "path"]) == "servicePorts")
        #expect(Suggest.closest(to: "zzzzzz", among: ["model"]) == nil)
    }

    @Test func weightsFromRepositoryNames() {
        #expect(DeploymentValidator.estimatedWeightsGB(repo: "meta-llama/Llama-2-7b-chat-hf") == 14)
        #expect(DeploymentValidator.estimatedWeightsGB(repo: "meta-llama/Llama-3.1-70B-Instruct") == 140)
        #expect(DeploymentValidator.estimatedWeightsGB(repo: "mistralai/Mixtral-8x7B-Instruct-v0.1") == 112)
        #expect(DeploymentValidator.estimatedWeightsGB(repo: "neuralmagic/Meta-Llama-3.1-70B-Instruct-FP8") == 70)
        #expect(DeploymentValidator.estimatedWeightsGB(repo: "TheBloke/Llama-2-13B-AWQ") == 6.5)
        #expect(DeploymentValidator.estimatedWeightsGB(repo: "org/my-finetune") == nil)
    }

    /// Names that Double's parser reads as numbers but are no parameter counts: exponents,
    /// infinities, NaN, hex, signs, and products beyond any model.
    @Test func weightsFromHostileRepositoryNames() {
        for repo in [
            "org/m-1e30x1b", "org/m-infx1b", "org/m-1e19x1b", "org/m-nanx1b", "org/m-nanb", "org/m-infb", "org/m-1e400b",
            "org/m-0x10b", "org/m-+5b", "org/m-5e3b", "org/m-5000x5000b", "org/m-99999999999999999999b", "org/m-.5b", "org/m-0b",
        ] {
            #expect(DeploymentValidator.estimatedWeightsGB(repo: repo) == nil, "\(repo)")
        }
        #expect(DeploymentValidator.estimatedWeightsGB(repo: "org/m-0.5b") == 1)
    }

    /// `num_gpus × instances` saturates instead of trapping, whatever a client sends.
    @Test func gpuLimitArithmeticSaturates() throws {
        let validator = DeploymentValidator(context: ValidationContext(catalog: try Catalog.standard(), gpuLimit: 4))
        for (gpus, minimum, maximum) in [(2, 0, Int.max), (2, 1 << 62, 1 << 62), (Int.max, 2, 2), (Int.min, 2, 3), (2, Int.min, Int.max)] {
            let spec = DeploymentSpec(
                modelName: "m", gpu: "H100", numGPUs: gpus, maxBatchSize: 8, hf: .init(repo: "org/m"),
                settings: .init(minInstances: minimum, maxInstances: maximum))
            let findings = validator.validate(spec) + validator.gpuLimit(spec, inUse: Int.max)
            #expect(!findings.isEmpty)
        }
        #expect(Int.max.saturatingMultiplied(by: 2) == .max)
        #expect(Int.max.saturatingMultiplied(by: -2) == .min)
        #expect(Int.max.saturatingAdding(1) == .max)
        #expect((3).saturatingMultiplied(by: 4) == 12)
    }

    @Test func stableJSON() throws {
        let meta = ObjectMeta(name: "a", tenant: "t", labels: ["b": "1", "a": "2"], created: Date(timeIntervalSince1970: 0))
        let json = String(decoding: try GPUPlaneJSON.encoder().encode(meta), as: UTF8.self)
        #expect(json == #"{"created":"1970-01-01T00:00:00Z","labels":{"a":"2","b":"1"},"name":"a","resourceVersion":"","tenant":"t","uid":""}"#)
        let back = try GPUPlaneJSON.decoder().decode(ObjectMeta.self, from: Data(json.utf8))
        #expect(back == meta)
    }

    @Test func storageKeys() {
        var app = Application(metadata: ObjectMeta(name: "web", tenant: "alice"), spec: ApplicationSpec(pods: []))
        #expect(app.storageKey == "/gpuplane/applications/alice/web")
        app.metadata.resourceVersion = "42"
        #expect(app.metadata.revision == 42)
        #expect(Node.storagePrefix(tenant: ObjectMeta.clusterTenant) == "/gpuplane/nodes/_cluster/")
        #expect(ResourceKind.node.isClusterScoped && !ResourceKind.replica.isClusterScoped)
    }
}
