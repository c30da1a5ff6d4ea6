import Foundation
import GPUPlaneCore

/// One object a manifest file declares.
public enum ManifestObject: Sendable, Hashable {
    /// An `application:` document.
    case application(name: String, spec: ApplicationSpec)
    /// A `deployment:` document (the body of a custom model deployment).
    case deployment(DeploymentSpec)
}

/// What reading a manifest found: the objects that decoded, and every finding with its position.
public struct Manifest: Sendable {
    /// Objects in document order (only those that decoded).
    public var objects: [ManifestObject]
    /// Every error and warning, each with file, line and column.
    public var diagnostics: [Diagnostic]

    /// Whether the manifest can be applied: it decoded and nothing is an error.
    public var isValid: Bool { !diagnostics.hasErrors }
}

/// Reads YAML or JSON manifests (several documents per file) into typed objects, then runs the
/// core's validation; every finding carries file, line:column and a dotted path.
public struct ManifestReader: Sendable {
    /// What validation checks against.
    public var context: ValidationContext
    /// Limits on hostile input.
    public var limits: ManifestLimits

    /// Makes a reader.
    public init(context: ValidationContext, limits: ManifestLimits = .standard) {
        self.context = context
        self.limits = limits
    }

    static let podFields = ["name", "path", "image", "servicePorts", "vars", "gpu", "machineType", "entrypoint", "command"]
    static let gpuFields = ["enabled", "model", "priority", "memoryGB", "count"]
    static let deploymentFields = ["model_name", "gpu", "num_gpus", "max_batch_size", "hf", "weights_gb", "settings"]

    /// Reads and validates `data`, naming `file` in every finding.
    public func read(_ data: Data, file: String? = nil) -> Manifest {
        let documents: [YAMLNode]
        do {
            documents = try YAMLParser(limits: limits).parse(data)
        } catch {
            var diagnostic = Diagnostic(error.code, path: "", error.message)
            diagnostic.file = file
            diagnostic.line = error.mark?.line
            diagnostic.column = error.mark?.column
            return Manifest(objects: [], diagnostics: [diagnostic])
        }
        var objects: [ManifestObject] = []
        var diagnostics: [Diagnostic] = []
        let nonEmpty = documents.filter { if case .scalar(let t, true, _) = $0, YAMLNode.isNull(t) { return false }; return true }
        if nonEmpty.isEmpty {
            var diagnostic = Diagnostic(.emptyDocument, path: "", "the file holds no document; write application: {name: ..., pods: [...]} or deployment: {...}")
            diagnostic.file = file
            return Manifest(objects: [], diagnostics: [diagnostic])
        }
        for document in nonEmpty {
            // Read first without keeping field positions: a clean document (the usual case)
            // never needs them. One with findings is read again keeping them, to place each
            // finding at its line and column; reading is deterministic, so both reads agree.
            var context = ReadContext(recordsMarks: false)
            var (object, found) = decodeAndValidate(document, context: context)
            if !found.isEmpty {
                context = ReadContext(recordsMarks: true)
                (object, found) = decodeAndValidate(document, context: context)
            }
            var located: [Diagnostic] = []
            for var diagnostic in found {
                diagnostic.file = file
                if diagnostic.line == nil, let mark = context.mark(for: diagnostic.path) {
                    diagnostic.line = mark.line
                    diagnostic.column = mark.column
                }
                located.append(diagnostic)
            }
            diagnostics += located.sorted { ($0.line ?? 0, $0.column ?? 0) < ($1.line ?? 0, $1.column ?? 0) }
            if let object, !located.hasErrors { objects.append(object) }
        }
        return Manifest(objects: objects, diagnostics: diagnostics)
    }

    /// Decodes one document and runs the rules on what decoded; a field already reported while
    /// decoding is not reported again.
    private func decodeAndValidate(_ document: YAMLNode, context: ReadContext) -> (ManifestObject?, [Diagnostic]) {
        let object = decodeDocument(document, context: context)
        var found = context.diagnostics
        if let object {
            let reported = Set(found.map(\.path))
            found += validate(object).filter { !reported.contains($0.path) }
        }
        return (object, found)
    }

    /// Reads a bare deployment body (`{"model_name": …}`), as the REST API receives it.
    public func readDeploymentBody(_ data: Data) -> (DeploymentSpec?, [Diagnostic]) {
        let documents: [YAMLNode]
        do {
            documents = try YAMLParser(limits: limits).parse(data)
        } catch {
            var diagnostic = Diagnostic(error.code, path: "", error.message)
            diagnostic.line = error.mark?.line
            diagnostic.column = error.mark?.column
            return (nil, [diagnostic])
        }
        guard documents.count == 1, let document = documents.first else {
            return (nil, [Diagnostic(.syntax, path: "", "expected one JSON object")])
        }
        let context = ReadContext()
        let spec = decodeDeployment(document, at: FieldPath(""), context: context)
        var found = context.diagnostics
        if let spec {
            let reported = Set(found.map(\.path))
            found += DeploymentValidator(context: self.context).validate(spec).filter { !reported.contains($0.path) }
        }
        for index in found.indices where found[index].line == nil {
            if let mark = context.mark(for: found[index].path) {
                found[index].line = mark.line
                found[index].column = mark.column
            }
        }
        return (found.hasErrors ? nil : spec, found)
    }

    /// Runs the core's rules on a decoded object.
    public func validate(_ object: ManifestObject) -> [Diagnostic] {
        switch object {
        case .application(let name, let spec):
            return ApplicationValidator(context: context).validate(name: name, spec: spec)
        case .deployment(let spec):
            return DeploymentValidator(context: context).validate(spec, root: FieldPath("deployment"))
        }
    }

    private func decodeDocument(_ node: YAMLNode, context: ReadContext) -> ManifestObject? {
        let root = FieldPath("")
        guard var top = MappingReader(node, at: root, context: context, what: "a document with an application: or deployment: key") else {
            return nil
        }
        let kinds = ["application", "deployment"]
        let present = top.keys.filter(kinds.contains)
        guard present.count == 1, let kind = present.first else {
            if present.count > 1 {
                context.error(.unknownDocument, root, top.mark, "a document holds one object; put application: and deployment: in separate documents (separated by ---)")
            } else {
                let hint = top.keys.first.map { Suggest.hint(for: $0, among: kinds) } ?? ""
                context.error(.unknownDocument, root, top.mark, "expected a top-level application: or deployment: key\(hint)")
            }
            return nil
        }
        guard let body = top.value(kind) else {
            context.error(.missingField, root[kind], top.mark, "'\(kind)' is empty")
            return nil
        }
        top.finish(known: kinds)
        if kind == "application" {
            return decodeApplication(body, context: context)
        }
        return decodeDeployment(body, at: FieldPath("deployment"), context: context).map { .deployment($0) }
    }

    private func decodeApplication(_ node: YAMLNode, context: ReadContext) -> ManifestObject? {
        let path = FieldPath("application")
        guard var app = MappingReader(node, at: path, context: context, what: "the application") else { return nil }
        let name = app.string("name", required: "give the application a DNS-label name, e.g. name: my-chat-backend")
        var pods: [Pod] = []
        if let podsNode = app.value("pods") {
            if case .sequence(let items, _) = podsNode {
                for (index, item) in items.enumerated() {
                    if let pod = decodePod(item, at: path["pods"][index], context: context) { pods.append(pod) }
                }
            } else {
                context.error(.typeMismatch, path["pods"], podsNode.mark, "expected a list of pods (each item starting with '- name:'), got \(podsNode.typeName)")
            }
        } else {
            app.missing("pods", "list the pods, e.g. pods: [{name: api, image: myorg/app:v1}]")
        }
        app.finish(known: ["name", "pods"]) { key, _ in HostAccess.refusal(for: key, at: path) }
        guard let name else { return nil }
        return .application(name: name, spec: ApplicationSpec(pods: pods))
    }

    private func decodePod(_ node: YAMLNode, at path: FieldPath, context: ReadContext) -> Pod? {
        guard var pod = MappingReader(node, at: path, context: context, what: "a pod") else { return nil }
        let name = pod.string("name", required: "give the pod a DNS-label name, e.g. name: api")
        let image = pod.string("image", required: "name the container image, e.g. image: myorg/chat-backend:v1")
        let podPath = pod.string("path")
        var ports: [Int] = []
        if let portsNode = pod.value("servicePorts") {
            if case .sequence(let items, _) = portsNode {
                ports = items.enumerated().compactMap { Scalars.int($1, at: path["servicePorts"][$0], context: context) }
            } else if let port = Scalars.int(portsNode, at: path["servicePorts"], context: context) {
                ports = [port]
            }
        }
        var vars: [String: String] = [:]
        var secretVars: [String: SecretReference] = [:]
        if let varsNode = pod.value("vars"), let reader = MappingReader(varsNode, at: path["vars"], context: context, what: "vars (NAME: value)") {
            for pair in reader.pairs {
                guard case .scalar(let key, _, _) = pair.key else { continue }
                context.record(path["vars"][key], pair.value.mark)
                if case .scalar(let text, let plain, _) = pair.value {
                    vars[key] = plain && YAMLNode.isNull(text) ? "" : text
                } else if case .mapping = pair.value {
                    // {secret: name} or {secret: name, key: k}: the value comes from a secret.
                    if let reference = decodeSecretReference(pair.value, at: path["vars"][key], context: context) {
                        secretVars[key] = reference
                    }
                } else {
                    context.error(.typeMismatch, path["vars"][key], pair.value.mark, "expected a string value or {secret: name}, got \(pair.value.typeName); quote it or serialise it as JSON text")
                }
            }
        }
        var gpu: GPUBlock?
        if let gpuNode = pod.value("gpu") {
            gpu = decodeGPU(gpuNode, at: path["gpu"], context: context)
        }
        var machineTypes = pod.stringList("machineType") ?? []
        if pod.keys.contains("machine_type") {
            if !machineTypes.isEmpty {
                context.error(.invalidValue, path["machine_type"], pod.mark, "give machineType once: machineType and machine_type are the same field")
            }
            machineTypes = pod.stringList("machine_type") ?? []
        }
        let entrypoint = pod.stringList("entrypoint")
        let command = pod.stringList("command")
        pod.finish(known: ManifestReader.podFields) { key, value in
            var text: String?
            if case .scalar(let t, _, _) = value { text = t }
            return HostAccess.refusal(for: key, at: path) ?? Antipattern.forMisplacedKey(key, value: text, inPodAt: path)
        }
        guard let name, let image else { return nil }
        var decoded = Pod(
            name: name, path: podPath, image: image, servicePorts: ports, vars: vars, gpu: gpu,
            machineTypes: machineTypes, entrypoint: entrypoint, command: command)
        if !secretVars.isEmpty { decoded.secretVars = secretVars }
        return decoded
    }

    /// A var's `{secret: name}` or `{secret: name, key: k}`.
    private func decodeSecretReference(_ node: YAMLNode, at path: FieldPath, context: ReadContext) -> SecretReference? {
        guard var reader = MappingReader(node, at: path, context: context, what: "a secret reference ({secret: name, key: k})") else { return nil }
        let secret = reader.string("secret", required: "name the tenant's secret the value comes from, e.g. {secret: db-url}")
        let key = reader.string("key")
        reader.finish(known: ["secret", "key"])
        guard let secret else { return nil }
        return SecretReference(secret: secret, key: key)
    }

    private func decodeGPU(_ node: YAMLNode, at path: FieldPath, context: ReadContext) -> GPUBlock? {
        if case .scalar(let text, true, _) = node, let flag = YAMLNode.bool(text) {
            context.error(
                .typeMismatch, path, node.mark,
                flag
                    ? "gpu is a block, not a flag; write gpu: {enabled: true, model: <slug>|auto|custom}"
                    : "to run without a GPU, omit the gpu block instead of gpu: false")
            return nil
        }
        guard var gpu = MappingReader(node, at: path, context: context, what: "the gpu block") else { return nil }
        let enabled = gpu.bool("enabled")
        let model = gpu.string("model")
        var priority: GPUPriority?
        if let text = gpu.string("priority") {
            if let value = GPUPriority(rawValue: text) {
                priority = value
            } else {
                let names = GPUPriority.allCases.map(\.rawValue)
                context.error(
                    .invalidPriority, path["priority"], context.marks[path["priority"].description] ?? gpu.mark,
                    "'\(text)' is not a priority\(Suggest.hint(for: text, among: names)); use one of \(names.joined(separator: " | ")) (default inference)")
            }
        }
        let memory = gpu.int("memoryGB")
        let count = gpu.int("count")
        gpu.finish(known: ManifestReader.gpuFields)
        return GPUBlock(enabled: enabled, model: model, priority: priority, memoryGB: memory, count: count)
    }

    private func decodeDeployment(_ node: YAMLNode, at path: FieldPath, context: ReadContext) -> DeploymentSpec? {
        guard var body = MappingReader(node, at: path, context: context, what: "the deployment") else { return nil }
        let modelName = body.string("model_name", required: "name the model, e.g. \"model_name\": \"test-model\"")
        let gpu = body.string("gpu", required: "pick a GPU type, e.g. \"gpu\": \"A100-80GB\"")
        let numGPUs = body.int("num_gpus") ?? 1
        let batch = body.int("max_batch_size", required: "set how many requests run in parallel, e.g. \"max_batch_size\": 64")
        let weightsGB = body.double("weights_gb")
        var hf: HuggingFaceWeights?
        if let hfNode = body.value("hf"), var reader = MappingReader(hfNode, at: path["hf"], context: context, what: "hf (Hugging Face weights)") {
            let repo = reader.string("repo", required: "name the repository, e.g. \"repo\": \"meta-llama/Llama-2-7b-chat-hf\"")
            let revision = reader.string("revision")
            let token = reader.string("token_secret")
            reader.finish(known: ["repo", "revision", "token_secret"]) { key, _ in
                key == "token"
                    ? Diagnostic(.invalidWeights, path: path["hf"]["token"].description, "never put a token in a deployment; store it as a tenant secret and name it with token_secret")
                    : nil
            }
            if let repo { hf = HuggingFaceWeights(repo: repo, revision: revision, tokenSecret: token) }
        } else if !body.keys.contains("hf") {
            body.missing("hf", "give the weights, e.g. \"hf\": {\"repo\": \"meta-llama/Llama-2-7b-chat-hf\"}")
        }
        var settings = DeploymentSettings(minInstances: 0, maxInstances: 1)
        if let settingsNode = body.value("settings"),
            var reader = MappingReader(settingsNode, at: path["settings"], context: context, what: "settings")
        {
            settings.minInstances = reader.int("min_instances") ?? 0
            settings.maxInstances = reader.int("max_instances") ?? max(settings.minInstances, 1)
            reader.finish(known: ["min_instances", "max_instances"])
        }
        body.finish(known: ManifestReader.deploymentFields) { key, _ in HostAccess.refusal(for: key, at: path) }
        guard let modelName, let gpu, let batch, let hf else { return nil }
        return DeploymentSpec(
            modelName: modelName, gpu: gpu, numGPUs: numGPUs, maxBatchSize: batch, hf: hf,
            weightsGB: weightsGB, settings: settings)
    }
}
