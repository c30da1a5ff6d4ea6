import Foundation
import GPUPlaneCore
import GPUPlaneManifest
import Testing

/// The examples and rules of reference/gpu-block-and-modes.txt.
@Suite struct GPUBlockRuleTests {
    @Test func theGPUBlockExampleValidates() throws {
        let manifest = read("""
            application:
              name: my-chat-backend
              pods:
              - name: api
                path: /api
                image: myorg/chat-backend:v1
                servicePorts: [8000]
                gpu:
                  enabled: true
                  model: llama-3.3-70b # catalog slug or "auto" or "custom"
                  priority: inference # interactive | inference | training | batch
                vars:
                  DATABASE_URL: postgresql://app:pass@db.pod:5432/chat
            """, plan: .scale)
        #expect(manifest.diagnostics.isEmpty, "\(manifest.diagnostics)")
        guard case .application(let name, let spec) = try #require(manifest.objects.first) else {
            Issue.record("expected an application"); return
        }
        #expect(name == "my-chat-backend")
        let pod = try #require(spec.pods.first)
        #expect(pod.gpu == GPUBlock(enabled: true, model: "llama-3.3-70b", priority: .inference))
        #expect(pod.vars["DATABASE_URL"] == "postgresql://app:pass@db.pod:5432/chat")
        #expect(pod.servicePorts == [8000])
        #expect(pod.path == "/api")
    }

    @Test func theBringYourOwnModelExampleValidates() throws {
        let manifest = read("""
            application:
              name: trainer-app
              pods:
              - name: trainer
                image: myorg/custom-trainer:v1
                servicePorts: [8080]
                gpu:
                  enabled: true
                  model: custom
                  priority: training
                  memoryGB: 96
            """, plan: .enterprise)
        #expect(manifest.isValid && manifest.diagnostics.isEmpty, "\(manifest.diagnostics)")
    }

    @Test func priorityDefaultsToInference() throws {
        let manifest = read(app(pod: "gpu: {enabled: true, model: llama-3.1-8b}"))
        guard case .application(_, let spec) = try #require(manifest.objects.first) else { return }
        #expect(spec.pods[0].gpu?.priority == nil)
        #expect(spec.pods[0].gpu?.effectivePriority == .inference)
    }

    @Test(arguments: GPUPriority.allCases)
    func everyPriorityIsAccepted(priority: GPUPriority) {
        #expect(read(app(pod: "gpu: {enabled: true, model: llama-3.1-8b, priority: \(priority.rawValue)}")).isValid)
    }

    @Test func enabledMustBeTrue() throws {
        let manifest = read(app(pod: "gpu: {enabled: false, model: llama-3.1-8b}"))
        let d = try #require(manifest.first(.gpuNotEnabled))
        #expect(d.path == "application.pods[0].gpu.enabled")
        #expect(d.message.contains("omit the gpu block"))
    }

    @Test func modelMustBeASlugAutoOrCustom() throws {
        let manifest = read(app(pod: "gpu: {enabled: true, model: llama-3.1-8, priority: inference}"))
        let d = try #require(manifest.first(.unknownModel))
        #expect(d.message.contains("did you mean 'llama-3.1-8b'"))
        #expect(d.line == 6)
        #expect(read(app(pod: "gpu: {enabled: true, model: auto}")).isValid)
    }

    @Test func modelIsRequired() {
        #expect(read(app(pod: "gpu: {enabled: true}")).codes == [.missingField])
    }

    @Test func priorityMustBeATier() throws {
        let manifest = read(app(pod: "gpu: {enabled: true, model: llama-3.1-8b, priority: realtime}"))
        let d = try #require(manifest.first(.invalidPriority))
        #expect(d.message.contains("interactive | inference | training | batch"))
        #expect(manifest.codes == [.invalidPriority])
    }

    @Test func memoryGBRequiredWithCustom() {
        #expect(read(app(pod: "gpu: {enabled: true, model: custom}")).codes == [.memoryGBRequired])
    }

    @Test func memoryGBOnlyWithCustom() {
        #expect(read(app(pod: "gpu: {enabled: true, model: llama-3.1-8b, memoryGB: 24}")).codes == [.memoryGBNotAllowed])
        #expect(read(app(pod: "gpu: {enabled: true, model: auto, memoryGB: 24}")).codes == [.memoryGBNotAllowed])
    }

    @Test func memoryGBAtMost96() throws {
        #expect(read(app(pod: "gpu: {enabled: true, model: custom, memoryGB: 96}")).isValid)
        let manifest = read(app(pod: "gpu: {enabled: true, model: custom, memoryGB: 97}"))
        #expect(manifest.codes == [.memoryGBOutOfRange])
        #expect(try #require(manifest.first(.memoryGBOutOfRange)).message.contains("1–96"))
        #expect(read(app(pod: "gpu: {enabled: true, model: custom, memoryGB: 0}")).codes == [.memoryGBOutOfRange])
    }

    @Test func memoryLimitFollowsTheFleet() {
        let bigFleet = reader(maxGPUMemoryGB: 192)
        #expect(bigFleet.read(Data(app(pod: "gpu: {enabled: true, model: custom, memoryGB: 141}").utf8)).isValid)
    }

    @Test func multiGPUCustom() {
        #expect(read(app(pod: "gpu: {enabled: true, model: custom, memoryGB: 80, count: 4}")).isValid)
        #expect(read(app(pod: "gpu: {enabled: true, model: custom, memoryGB: 80, count: 9}")).codes.contains(.gpuCountOutOfRange))
        #expect(read(app(pod: "gpu: {enabled: true, model: llama-3.1-8b, count: 2}")).codes == [.gpuCountNotAllowed])
    }
}

/// One test per row of the antipattern table, each with its own message showing the right form.
@Suite struct AntipatternTests {
    @Test func modelAtPodRoot() throws {
        let manifest = read(app(pod: "model: llama-3.3-70b"))
        let d = try #require(manifest.first(.modelAtPodRoot))
        #expect(d.message.contains("gpu: {enabled: true, model: llama-3.3-70b, priority: inference}"))
        #expect((d.line, d.column) == (6, 7))
    }

    @Test func gpuBlockWithoutEnabled() throws {
        let manifest = read(app(pod: "gpu: {model: llama-3.3-70b}"), plan: .scale)
        #expect(manifest.codes == [.gpuEnabledMissing])
        #expect(try #require(manifest.first(.gpuEnabledMissing)).message.contains("gpu: {enabled: true, model: llama-3.3-70b}"))
    }

    @Test func modelNameEnvVar() throws {
        let manifest = read(app(pod: "vars:\n  MODEL_NAME: llama-3.3-70b"))
        let d = try #require(manifest.first(.modelNameEnvVar))
        #expect(d.severity == .error)
        #expect(d.message.contains("scheduler can't see env at admit time"))
        #expect(d.message.contains("gpu: {enabled: true, model: llama-3.3-70b}"))
        #expect(d.path == "application.pods[0].vars.MODEL_NAME")
        // Beside a real gpu block it is only redundant: a warning.
        let both = read(app(pod: "gpu: {enabled: true, model: llama-3.1-8b}\nvars:\n  MODEL_NAME: x"))
        #expect(both.isValid)
        #expect(both.first(.modelNameEnvVar)?.severity == .warning)
    }

    @Test func useGPUDeprecated() throws {
        let manifest = read(app(pod: "useGPU: true"))
        let d = try #require(manifest.first(.useGPUDeprecated))
        #expect(d.message.contains("gpu: {enabled: true, model: custom, memoryGB: 96}"))
        #expect(manifest.codes == [.useGPUDeprecated])
    }
}

/// The per-plan entitlement check, each refusal naming the plan that would allow it.
@Suite struct EntitlementTests {
    @Test func freeMayUseAutoOnly() throws {
        #expect(read(app(pod: "gpu: {enabled: true, model: auto}"), plan: .free).isValid)
        let manifest = read(app(pod: "gpu: {enabled: true, model: llama-3.1-8b}"), plan: .free)
        let d = try #require(manifest.first(.planEntitlement))
        #expect(d.message.contains("needs the Pro plan"))
        #expect(d.message.contains("Free plan allows gpu.model: auto only"))
    }

    @Test func proMayUseSmallMode3Only() throws {
        #expect(read(app(pod: "gpu: {enabled: true, model: phi-3.5-mini}"), plan: .pro).isValid)
        let large = read(app(pod: "gpu: {enabled: true, model: llama-3.3-70b}"), plan: .pro)
        #expect(try #require(large.first(.planEntitlement)).message.contains("needs the Scale plan"))
        let mid = read(app(pod: "gpu: {enabled: true, model: qwen-2.5-14b}"), plan: .pro)
        #expect(try #require(mid.first(.planEntitlement)).message.contains("needs the Scale plan"))
    }

    @Test func scaleMayUseMode2AndMode3ButNotCustom() throws {
        #expect(read(app(pod: "gpu: {enabled: true, model: deepseek-r1-distill-llama-70b-fp8}"), plan: .scale).isValid)
        let custom = read(app(pod: "gpu: {enabled: true, model: custom, memoryGB: 96}"), plan: .scale)
        #expect(try #require(custom.first(.planEntitlement)).message.contains("needs the Enterprise plan"))
    }

    @Test(arguments: ["llama-3.1-8b", "llama-3.3-70b", "qwen-2.5-coder-32b-fp8", "custom"])
    func enterpriseMayUseEverySlugAndCustom(model: String) {
        let memory = model == "custom" ? ", memoryGB: 96" : ""
        #expect(read(app(pod: "gpu: {enabled: true, model: \(model)\(memory)}"), plan: .enterprise).isValid)
    }

    /// "literal auto (Free plan only, scheduler picks a small shared model)": Pro and above
    /// name a slug, told so at gpu.model's line and column, with a slug they may use.
    @Test(arguments: [Plan.pro, .scale, .enterprise])
    func autoIsForTheFreePlanOnly(plan: Plan) throws {
        let yaml = "application:\n  name: my-app\n  pods:\n    - name: api\n      image: myorg/app:v1\n      gpu:\n        enabled: true\n        model: auto\n"
        let manifest = read(yaml, plan: plan)
        #expect(!manifest.isValid)
        #expect(manifest.codes == [.planEntitlement], "\(manifest.diagnostics)")
        let d = try #require(manifest.first(.planEntitlement))
        #expect(d.path == "application.pods[0].gpu.model")
        #expect((d.line, d.column) == (8, 16))
        #expect(d.message.contains("auto is for the Free plan only"), "\(d.message)")
        #expect(d.message.contains("name a catalog slug in gpu.model"), "\(d.message)")
        #expect(d.message.contains("\(plan.displayName) plan"), "\(d.message)")
        #expect(d.message.contains("e.g. model: phi-3.5-mini"), "\(d.message)")
        #expect(read(yaml.replacingOccurrences(of: "model: auto", with: "model: phi-3.5-mini"), plan: plan).isValid)
    }

    @Test func noPlanMeansNoEntitlementCheck() {
        #expect(read(app(pod: "gpu: {enabled: true, model: custom, memoryGB: 96}")).isValid)
    }
}
