#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The rules of `reference/custom-llm-deployments.txt` for a deployment request.
public struct DeploymentValidator: Sendable {
    /// What to check against.
    public let context: ValidationContext
    /// Share of VRAM kept free for the KV cache beyond the weights (20%).
    public static let kvCacheHeadroom = 0.2
    /// Upper bounds that keep a typo from asking for a fleet.
    public static let maxInstances = 64
    /// The largest `max_batch_size`.
    public static let maxBatchSize = 4096
    /// The sizes of weights, in GB, that `weights_gb` may give (NaN and infinities are outside).
    static let weightsRange = 0.001..<10_000.0
    /// The largest parameter count, in billions, read off a repository name.
    static let maxBillions = 5000.0

    /// Makes a validator.
    public init(context: ValidationContext) { self.context = context }

    /// Every finding for `spec`, paths rooted at `root` (`deployment` in manifests, empty for
    /// REST bodies so paths read `num_gpus`).
    public func validate(_ spec: DeploymentSpec, root: FieldPath = FieldPath("")) -> [Diagnostic] {
        var out: [Diagnostic] = []
        if !Syntax.isModelName(spec.modelName) {
            out.append(Diagnostic(
                .invalidModelName, path: root["model_name"].description,
                "'\(spec.modelName)' is not a model name: use 1–64 letters, digits, '.', '_' or '-', starting with a letter or digit (the full name becomes owner/model_name)"))
        }
        let gpuType = context.machineTypes.named(spec.gpu)
        if gpuType == nil || gpuType?.family != .gpu {
            let names = context.machineTypes.gpuTypes.map(\.name)
            let aliases = context.machineTypes.gpuTypes.flatMap(\.aliases)
            out.append(Diagnostic(
                .unknownGPUType, path: root["gpu"].description,
                "'\(spec.gpu)' is not a GPU type\(Suggest.hint(for: spec.gpu, among: names + aliases)); use one of \(names.joined(separator: ", ")) (A100-80GB and H100-80GB are accepted too)"))
        }
        if !(1...8).contains(spec.numGPUs) {
            out.append(Diagnostic(
                .numGPUsOutOfRange, path: root["num_gpus"].description,
                "num_gpus \(spec.numGPUs) is out of range; one instance runs on one node, so use 1–8"))
        }
        if !(1...DeploymentValidator.maxBatchSize).contains(spec.maxBatchSize) {
            out.append(Diagnostic(
                .invalidBatchSize, path: root["max_batch_size"].description,
                "max_batch_size \(spec.maxBatchSize) is out of range; use 1–\(DeploymentValidator.maxBatchSize) (requests beyond it are queued)"))
        }
        if !Syntax.isHuggingFaceRepo(spec.hf.repo) {
            out.append(Diagnostic(
                .invalidWeights, path: root["hf"]["repo"].description,
                "'\(spec.hf.repo)' is not a Hugging Face repository; write owner/name, e.g. meta-llama/Llama-2-7b-chat-hf"))
        }
        if let weights = spec.weightsGB, !DeploymentValidator.weightsRange.contains(weights) {
            out.append(Diagnostic(
                .invalidWeights, path: root["weights_gb"].description,
                "weights_gb \(weights) is out of range; give the size of the weights in GB (more than 0, less than 10000)"))
        }
        // A weights_gb out of range was reported above and is never used for the fit.
        let weights = spec.weightsGB.map { DeploymentValidator.weightsRange.contains($0) ? $0 : nil }
            ?? DeploymentValidator.estimatedWeightsGB(repo: spec.hf.repo)
        if let gpuType, gpuType.family == .gpu, (1...8).contains(spec.numGPUs), let weights {
            let needed = weights * (1 + DeploymentValidator.kvCacheHeadroom)
            let have = Double(gpuType.vramGB * spec.numGPUs)
            if have < needed {
                let minimum = Int((needed / Double(gpuType.vramGB)).rounded(.up))
                let fix = minimum <= 8 ? "use num_gpus: \(minimum) or more" : "pick a larger GPU type"
                out.append(Diagnostic(
                    .weightsDoNotFit, path: root["num_gpus"].description,
                    "\(spec.numGPUs) × \(gpuType.name) (\(gpuType.vramGB) GB) can't hold about \(Int(weights.rounded())) GB of weights plus room for the KV cache (\(Int(needed.rounded())) GB in all); \(fix)"))
            }
        }
        let settings = spec.settings
        let settingsPath = root["settings"]
        if settings.minInstances < 0 {
            out.append(Diagnostic(
                .invalidInstances, path: settingsPath["min_instances"].description,
                "min_instances \(settings.minInstances) can't be negative; use 0 or more"))
        }
        if !(1...DeploymentValidator.maxInstances).contains(settings.maxInstances) {
            out.append(Diagnostic(
                .invalidInstances, path: settingsPath["max_instances"].description,
                "max_instances \(settings.maxInstances) is out of range; use 1–\(DeploymentValidator.maxInstances)"))
        }
        if settings.minInstances > settings.maxInstances {
            out.append(Diagnostic(
                .invalidInstances, path: settingsPath["min_instances"].description,
                "min_instances \(settings.minInstances) is more than max_instances \(settings.maxInstances); make min_instances <= max_instances"))
        }
        out += gpuLimit(spec, root: root)
        return out
    }

    /// The per-user GPU limit: `num_gpus × min_instances` must fit it; scaling beyond it warns.
    /// Products saturate at `Int.max` instead of trapping, so any count a client sends is safe.
    public func gpuLimit(_ spec: DeploymentSpec, root: FieldPath = FieldPath(""), inUse: Int = 0) -> [Diagnostic] {
        let limit = context.gpuLimit
        let settingsPath = root["settings"]
        let gpus = max(spec.numGPUs, 0)
        let inUse = max(inUse, 0)
        let perInstance = gpus.saturatingAdding(inUse)
        let minimumGPUs = gpus.saturatingMultiplied(by: max(spec.settings.minInstances, 0))
        let maximumGPUs = gpus.saturatingMultiplied(by: max(spec.settings.maxInstances, 0))
        if perInstance > limit {
            return [Diagnostic(
                .gpuLimitExceeded, path: root["num_gpus"].description,
                "\(spec.numGPUs) GPUs per instance\(inUse > 0 ? " plus \(inUse) already in use" : "") exceeds the limit of \(limit) GPUs per user; use fewer GPUs or ask an operator to raise the limit")]
        }
        if minimumGPUs.saturatingAdding(inUse) > limit {
            return [Diagnostic(
                .gpuLimitExceeded, path: settingsPath["min_instances"].description,
                "min_instances \(spec.settings.minInstances) × num_gpus \(spec.numGPUs) = \(Self.count(minimumGPUs)) GPUs\(inUse > 0 ? " plus \(inUse) already in use" : "") exceeds the limit of \(limit) GPUs per user (e.g. 4 instances × 1 GPU or 1 instance × 4 GPUs); lower min_instances")]
        }
        if maximumGPUs.saturatingAdding(inUse) > limit {
            let reachable = max(limit - inUse, 0) / max(gpus, 1)
            return [Diagnostic(
                .warning, .gpuLimitExceeded, path: settingsPath["max_instances"].description,
                "max_instances \(spec.settings.maxInstances) × num_gpus \(spec.numGPUs) exceeds the limit of \(limit) GPUs per user; scaling will stop at \(reachable) instances")]
        }
        return []
    }

    /// A saturated count in words.
    private static func count(_ value: Int) -> String { value == .max ? "more than \(Int.max)" : "\(value)" }

    /// The size of a model's weights in GB, read off its repository name when it states the
    /// parameter count (`Llama-2-7b`, `Mixtral-8x7B`, `…-70B-…-FP8`): 2 bytes a parameter, 1 for
    /// FP8/INT8, half for 4-bit. Nil when the name doesn't say.
    public static func estimatedWeightsGB(repo: String) -> Double? {
        let name = repo.split(separator: "/").last.map(String.init)?.lowercased() ?? repo.lowercased()
        let tokens = name.split(whereSeparator: { $0 == "-" || $0 == "_" })
        var billions: Double?
        for token in tokens {
            guard token.hasSuffix("b") else { continue }
            let body = token.dropLast()
            if let x = body.firstIndex(of: "x") {
                if let experts = Self.decimal(body[..<x]), let each = Self.decimal(body[body.index(after: x)...]),
                    experts * each <= Self.maxBillions
                {
                    billions = experts * each
                }
            } else if let value = Self.decimal(body), value <= Self.maxBillions {
                billions = value
            }
        }
        guard let billions else { return nil }
        let bytesPerParameter: Double
        if name.contains("fp8") || name.contains("int8") || name.contains("8bit") {
            bytesPerParameter = 1
        } else if name.contains("awq") || name.contains("gptq") || name.contains("int4") || name.contains("4bit") {
            bytesPerParameter = 0.5
        } else {
            bytesPerParameter = 2
        }
        return billions * bytesPerParameter
    }

    /// A positive plain decimal (`7`, `1.5`) of at most 12 characters, or nil: exponents,
    /// `inf`, `nan`, signs and hex are not parameter counts.
    static func decimal(_ text: Substring) -> Double? {
        guard !text.isEmpty, text.count <= 12, text.first != ".", text.last != ".",
            text.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") }), text.filter({ $0 == "." }).count <= 1,
            let value = Double(text), value.isFinite, value > 0
        else { return nil }
        return value
    }
}

extension Int {
    /// `self + other`, or `Int.max`/`Int.min` where that overflows.
    public func saturatingAdding(_ other: Int) -> Int {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? (other > 0 ? .max : .min) : sum
    }

    /// `self × other`, or `Int.max`/`Int.min` where that overflows.
    public func saturatingMultiplied(by other: Int) -> Int {
        let (product, overflow) = multipliedReportingOverflow(by: other)
        return overflow ? ((self < 0) == (other < 0) ? .max : .min) : product
    }
}
