/// The rules of `reference/gpu-block-and-modes.txt` for an application manifest.
public struct ApplicationValidator: Sendable {
    /// What to check against.
    public let context: ValidationContext

    /// Makes a validator.
    public init(context: ValidationContext) { self.context = context }

    /// Every finding for `spec` of the application called `name`, paths rooted at `application`.
    public func validate(name: String, spec: ApplicationSpec) -> [Diagnostic] {
        let root = FieldPath("application")
        var out: [Diagnostic] = []
        if !Syntax.isDNSLabel(name) {
            out.append(Diagnostic(
                .invalidName, path: root["name"].description,
                "'\(name)' is not a DNS label (1–63 lower-case letters, digits and '-', starting and ending with a letter or digit); try '\(Syntax.dnsLabelSuggestion(for: name))'"))
        }
        if spec.pods.isEmpty {
            out.append(Diagnostic(.noPods, path: root["pods"].description, "an application needs at least one pod"))
        }
        var seenNames: [String: Int] = [:]
        var seenPaths: [String: Int] = [:]
        var gpusWanted = 0
        for (index, pod) in spec.pods.enumerated() {
            let path = root["pods"][index]
            if let podPath = pod.path.map(Self.normalizedIngressPath) {
                if let first = seenPaths[podPath] {
                    out.append(Diagnostic(
                        .invalidPath, path: path["path"].description,
                        "path \(podPath) is already served by pods[\(first)]; each pod needs a path of its own"))
                } else {
                    seenPaths[podPath] = index
                }
            }
            if let first = seenNames[pod.name] {
                out.append(Diagnostic(
                    .duplicateName, path: path["name"].description,
                    "pod name '\(pod.name)' is already used by pods[\(first)]; pod names must be unique"))
            } else {
                seenNames[pod.name] = index
            }
            out += validate(pod: pod, at: path)
            if let gpu = pod.gpu, gpu.enabled == true {
                gpusWanted += wholeGPUs(gpu)
            }
        }
        if gpusWanted > context.gpuLimit {
            out.append(Diagnostic(
                .gpuLimitExceeded, path: root["pods"].description,
                "the pods ask for \(gpusWanted) whole GPUs but the limit is \(context.gpuLimit) per user; ask for fewer, or ask an operator to raise your limit"))
        }
        return out
    }

    /// A pod's `path` as the ingress matches it: without trailing slashes (`/api/` is `/api`),
    /// `/` for the root.
    public static func normalizedIngressPath(_ path: String) -> String {
        var trimmed = Substring(path)
        while trimmed.count > 1, trimmed.hasSuffix("/") { trimmed = trimmed.dropLast() }
        return String(trimmed)
    }

    /// What is wrong with a `path` that starts with `/` for the ingress, or nil: it is matched
    /// by whole segments, so segments must be plain (letters, digits, `-._~` and the like, not
    /// `.` or `..`, no `?`, `#`, `%` or empty segments in the middle).
    static func ingressPathProblem(_ path: String) -> String? {
        let normalized = normalizedIngressPath(path)
        guard normalized != "/" else { return nil }
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@")
        for segment in normalized.dropFirst().split(separator: "/", omittingEmptySubsequences: false) {
            if segment.isEmpty { return "has an empty segment ('//'); write e.g. /api/v1" }
            if segment == "." || segment == ".." { return "has a '\(segment)' segment; write the path it stands for" }
            if let bad = segment.first(where: { !allowed.contains($0) }) {
                return "has '\(bad)', which a path segment may not hold here (no '?', '#' or '%'); write e.g. /api"
            }
        }
        return nil
    }

    /// Whole GPUs a gpu block holds: Mode 1 its count, Mode 2 one slot, Mode 3 none (shared).
    public func wholeGPUs(_ gpu: GPUBlock) -> Int {
        guard let model = gpu.model else { return 0 }
        if model == Catalog.custom { return gpu.count ?? 1 }
        if let entry = context.catalog.model(model), entry.mode == .largePinned { return 1 }
        return 0
    }

    private func validate(pod: Pod, at path: FieldPath) -> [Diagnostic] {
        var out: [Diagnostic] = []
        if !Syntax.isDNSLabel(pod.name) {
            out.append(Diagnostic(
                .invalidName, path: path["name"].description,
                "'\(pod.name)' is not a DNS label (1–63 lower-case letters, digits and '-', starting and ending with a letter or digit); try '\(Syntax.dnsLabelSuggestion(for: pod.name))'"))
        }
        do {
            _ = try ImageReference(parsing: pod.image)
        } catch {
            out.append(Diagnostic(
                .invalidImage, path: path["image"].description,
                "'\(pod.image)' is not an image reference: \(error); write e.g. myorg/chat-backend:v1"))
        }
        if let podPath = pod.path, !podPath.hasPrefix("/") || Syntax.containsWhitespace(podPath) {
            out.append(Diagnostic(
                .invalidPath, path: path["path"].description,
                "'\(podPath)' must be a URL path starting with '/' and without spaces, e.g. /api"))
        } else if let podPath = pod.path, let problem = Self.ingressPathProblem(podPath) {
            out.append(Diagnostic(.invalidPath, path: path["path"].description, "'\(podPath)' \(problem)"))
        } else if let podPath = pod.path, pod.servicePorts.isEmpty {
            out.append(Diagnostic(
                .invalidPath, path: path["path"].description,
                "path \(podPath) is served on the pod's first servicePort, and this pod lists none; add e.g. servicePorts: [8000], or remove the path"))
        }
        var seenPorts: Set<Int> = []
        for (i, port) in pod.servicePorts.enumerated() {
            if !(1...65535).contains(port) {
                out.append(Diagnostic(
                    .invalidPort, path: path["servicePorts"][i].description,
                    "port \(port) is out of range; use 1–65535"))
            } else if !seenPorts.insert(port).inserted {
                out.append(Diagnostic(
                    .duplicatePort, path: path["servicePorts"][i].description, "port \(port) is listed twice"))
            }
        }
        for (key, reference) in (pod.secretVars ?? [:]).sorted(by: { $0.key < $1.key }) {
            let varPath = path["vars"][key]
            if !Syntax.isDNSLabel(reference.secret) {
                out.append(Diagnostic(
                    .invalidVar, path: varPath["secret"].description,
                    "'\(reference.secret)' is not a secret name; secrets are named with DNS labels (a-z, 0-9, '-'), e.g. {secret: db-url}"))
            }
            if let key = reference.key, !Secret.isKeyName(key) {
                out.append(Diagnostic(
                    .invalidVar, path: varPath["key"].description,
                    "'\(key)' is not a secret key; keys are 1-253 letters, digits, '.', '_' or '-'"))
            }
        }
        for key in (Array(pod.vars.keys) + Array((pod.secretVars ?? [:]).keys)).sorted() {
            let varPath = path["vars"][key]
            if !Syntax.isEnvName(key) {
                out.append(Diagnostic(
                    .invalidVar, path: varPath.description,
                    "'\(key)' is not an environment variable name; use letters, digits and '_', not starting with a digit"))
            } else if key.hasPrefix("NXL_") {
                out.append(Diagnostic(
                    .reservedVar, path: varPath.description,
                    "NXL_* variables are set by gpuplane (NXL_INFERENCE_URL, NXL_GPU_INDEX, NXL_GPU_INDICES); remove '\(key)'"))
            } else if key == "MODEL_NAME" {
                // The antipattern row: the scheduler can't see env at admit time.
                out.append(Diagnostic(
                    pod.gpu == nil ? .error : .warning, .modelNameEnvVar, path: varPath.description,
                    "the MODEL_NAME env var requests no model: the scheduler can't see env at admit time; use gpu: {enabled: true, model: \(pod.vars[key].map { $0.isEmpty ? "<slug>" : $0 } ?? "<slug>")}"))
            }
        }
        if let gpu = pod.gpu {
            out += validate(gpu: gpu, at: path["gpu"])
        }
        out += validateMachineTypes(pod: pod, at: path)
        return out
    }

    private func validate(gpu: GPUBlock, at path: FieldPath) -> [Diagnostic] {
        var out: [Diagnostic] = []
        let model = gpu.model
        switch gpu.enabled {
        case .none:
            out.append(Diagnostic(
                .gpuEnabledMissing, path: path["enabled"].description,
                "gpu.enabled: true is required when the gpu block is present; write gpu: {enabled: true, model: \(model ?? "<slug>")}, or omit the block to run without a GPU"))
        case .some(false):
            out.append(Diagnostic(
                .gpuNotEnabled, path: path["enabled"].description,
                "gpu.enabled must be true when the gpu block is present; to disable the GPU, omit the gpu block"))
        case .some(true):
            break
        }
        guard let model else {
            out.append(Diagnostic(
                .missingField, path: path["model"].description,
                "gpu.model is required: a catalog slug, auto, or custom"))
            return out
        }
        let isCustom = model == Catalog.custom
        if isCustom {
            if let memory = gpu.memoryGB {
                if memory < 1 || memory > context.maxGPUMemoryGB {
                    out.append(Diagnostic(
                        .memoryGBOutOfRange, path: path["memoryGB"].description,
                        "memoryGB \(memory) is out of range; the largest GPU of this fleet has \(context.maxGPUMemoryGB) GB, so use 1–\(context.maxGPUMemoryGB)"))
                }
            } else {
                out.append(Diagnostic(
                    .memoryGBRequired, path: path["memoryGB"].description,
                    "gpu.memoryGB is required with model: custom; e.g. memoryGB: 96"))
            }
            if let count = gpu.count, !(1...8).contains(count) {
                out.append(Diagnostic(
                    .gpuCountOutOfRange, path: path["count"].description,
                    "count \(count) is out of range; one node has at most 8 GPUs, so use 1–8"))
            }
        } else {
            if gpu.memoryGB != nil {
                out.append(Diagnostic(
                    .memoryGBNotAllowed, path: path["memoryGB"].description,
                    "gpu.memoryGB is only for model: custom; the catalog fixes the memory of '\(model)', so remove memoryGB"))
            }
            if gpu.count != nil {
                out.append(Diagnostic(
                    .gpuCountNotAllowed, path: path["count"].description,
                    "gpu.count is only for model: custom; pinned models are served from their own slots, so remove count"))
            }
            if model != Catalog.auto && context.catalog.model(model) == nil {
                let hint = Suggest.hint(for: model, among: context.catalog.slugs + [Catalog.auto, Catalog.custom])
                out.append(Diagnostic(
                    .unknownModel, path: path["model"].description,
                    "'\(model)' is not a catalog slug\(hint); use a slug from `gpuplane models`, auto, or custom"))
                return out
            }
        }
        if let plan = context.plan, let refusal = entitlement(model: model, plan: plan) {
            out.append(Diagnostic(.planEntitlement, path: path["model"].description, refusal))
        }
        return out
    }

    /// Why `plan` may not use `model`, naming the plan that would allow it; nil when it may.
    public func entitlement(model: String, plan: Plan) -> String? {
        if model == Catalog.auto {
            guard !plan.allowsAuto else { return nil }
            let example = context.catalog.autoModel.map { ", e.g. model: \($0.slug)" } ?? ""
            return "model: auto is for the Free plan only (the scheduler picks a small shared model there); on the \(plan.displayName) plan, name a catalog slug in gpu.model instead\(example) (`gpuplane models` lists the slugs and the plans that may use each)"
        }
        if model == Catalog.custom {
            return plan.allowsCustom
                ? nil
                : "model: custom (Mode 1, raw GPUs) needs the Enterprise plan; the \(plan.displayName) plan allows \(plan.accessSummary)"
        }
        guard let entry = context.catalog.model(model), !plan.allows(entry) else { return nil }
        let needed = Plan.lowest(allowing: entry)
        let size = entry.mode == .sharedPinned ? "\(entry.size == .mid ? "mid-size" : "small") " : ""
        return "'\(model)' is a \(size)\(entry.mode.displayName) model, which needs the \(needed.displayName) plan or higher; the \(plan.displayName) plan allows \(plan.accessSummary)"
    }

    private func validateMachineTypes(pod: Pod, at path: FieldPath) -> [Diagnostic] {
        var out: [Diagnostic] = []
        let needGB = vramNeeded(pod.gpu)
        for (i, name) in pod.machineTypes.enumerated() {
            let typePath = pod.machineTypes.count == 1 ? path["machineType"] : path["machineType"][i]
            guard let type = context.machineTypes.named(name) else {
                let hint = Suggest.hint(for: name, among: context.machineTypes.types.map(\.name))
                out.append(Diagnostic(
                    .unknownMachineType, path: typePath.description,
                    "'\(name)' is not a machine type\(hint); GPU types are \(context.machineTypes.gpuTypes.map(\.name).joined(separator: ", ")); CPU types are XS, S, M, L, XL"))
                continue
            }
            if pod.gpu == nil, type.family == .gpu {
                out.append(Diagnostic(
                    .machineTypeMismatch, path: typePath.description,
                    "\(type.name) is a GPU machine type but the pod has no gpu block; add gpu: {enabled: true, model: ...} or pick a CPU type (XS–XL)"))
            } else if pod.gpu != nil, type.family == .cpu {
                out.append(Diagnostic(
                    .machineTypeMismatch, path: typePath.description,
                    "\(type.name) is a CPU machine type but the pod asks for a GPU; pick a GPU type, or omit machineType to get the smallest GPU that fits"))
            } else if let needGB, type.family == .gpu, type.vramGB < needGB {
                out.append(Diagnostic(
                    .machineTypeMismatch, path: typePath.description,
                    "\(type.name) has \(type.vramGB) GB of VRAM but the pod needs \(needGB) GB; pick \(context.machineTypes.smallestGPU(fitting: needGB)?.name ?? "a larger GPU") or larger"))
            }
        }
        return out
    }

    /// VRAM the pod needs on one GPU, in GB, when that can be known from the manifest.
    public func vramNeeded(_ gpu: GPUBlock?) -> Int? {
        guard let gpu, let model = gpu.model else { return nil }
        if model == Catalog.custom { return gpu.memoryGB }
        if model == Catalog.auto { return context.catalog.autoModel?.vramGB }
        guard let entry = context.catalog.model(model) else { return nil }
        // Mode 2 holds a whole 96 GB-class slot.
        return entry.mode == .largePinned ? max(entry.vramGB, 96) : entry.vramGB
    }
}
