/// Where a model's weights come from: what a catalog entry's `weights` or a deployment's
/// `hf.repo` names, parsed.
///
/// Three kinds, as ``parse(_:revision:)`` reads them:
/// - a Hugging Face repository, `owner/name` (the catalog's plain ids) or
///   `hf://owner/name[@revision]`, at a revision (branch, tag or commit; `main` when none);
/// - an OCI artifact or image whose layers are the files, `oci://REGISTRY/REPOSITORY:TAG` or
///   `oci://REGISTRY/REPOSITORY@sha256:DIGEST` (ORAS style: one layer per file, named by its
///   `org.opencontainers.image.title` annotation; plain tar layers are unpacked);
/// - a directory (or file) on every node, `/abs/path` or `file:///abs/path`, mounted as it is.
///
/// The node-agent fetches the first two once per node into its content-addressed weights
/// cache, and mounts the weights read-only at ``ServingWeights/mountPath`` in the server's
/// container.
public enum WeightsSource: Sendable, Hashable, CustomStringConvertible {
    /// A Hugging Face repository at a revision.
    case huggingFace(repo: String, revision: String)
    /// An OCI artifact: registry `host[:port]`, repository path, and a tag or a digest.
    case oci(OCIReference)
    /// An absolute path on the node.
    case hostPath(String)

    /// The revision a Hugging Face source without one is fetched at.
    public static let defaultRevision = "main"

    /// An OCI reference: `registry/repository` with a tag or a `sha256:` digest.
    public struct OCIReference: Sendable, Hashable, CustomStringConvertible {
        /// `host[:port]`, e.g. `127.0.0.1:5000` or `registry.example.com`.
        public var registry: String
        /// The repository path, e.g. `gpuplane/tiny-random-llama`.
        public var repository: String
        /// The tag; nil when a digest is named.
        public var tag: String?
        /// `sha256:<64 hex>`; nil when a tag is named.
        public var digest: String?

        /// Makes a reference.
        public init(registry: String, repository: String, tag: String?, digest: String?) {
            self.registry = registry
            self.repository = repository
            self.tag = tag
            self.digest = digest
        }

        /// The tag or the digest, as the registry's `/v2/<repository>/manifests/<reference>` takes it.
        public var reference: String { digest ?? tag ?? "latest" }

        /// `oci://registry/repository:tag` or `…@sha256:…`.
        public var description: String {
            "oci://\(registry)/\(repository)" + (digest.map { "@\($0)" } ?? ":\(tag ?? "latest")")
        }
    }

    /// The canonical text: `hf://owner/name@revision`, `oci://…`, or the absolute path.
    /// ``parse(_:revision:)`` reads it back to the same source.
    public var description: String {
        switch self {
        case .huggingFace(let repo, let revision): return "hf://\(repo)@\(revision)"
        case .oci(let reference): return reference.description
        case .hostPath(let path): return path
        }
    }

    /// Whether the node-agent fetches it into its cache (Hugging Face and OCI) rather than
    /// mounting it as it is (a host path).
    public var isFetched: Bool {
        if case .hostPath = self { return false }
        return true
    }

    /// Parses `text` (see ``WeightsSource``); `revision` is a Hugging Face source's revision when
    /// the text names none (a deployment's `hf.revision`).
    /// - Throws: ``WeightsSourceError`` saying what is wrong and how to write it.
    public static func parse(_ text: String, revision: String? = nil) throws(WeightsSourceError) -> WeightsSource {
        let trimmed = text
        guard !trimmed.isEmpty else {
            throw WeightsSourceError("no weights named; write owner/name (Hugging Face), oci://REGISTRY/REPOSITORY:TAG or /abs/path")
        }
        guard !trimmed.unicodeScalars.contains(where: { $0.value < 0x21 || $0.value == 0x7f }) else {
            throw WeightsSourceError("'\(text)' contains spaces or control characters")
        }
        if trimmed.hasPrefix("oci://") {
            return .oci(try parseOCI(String(trimmed.dropFirst("oci://".count)), text: text))
        }
        if trimmed.hasPrefix("file://") {
            let path = String(trimmed.dropFirst("file://".count))
            guard path.hasPrefix("/") else {
                throw WeightsSourceError("'\(text)' is not a file URL of an absolute path; write file:///abs/path")
            }
            return .hostPath(try checkedPath(path, text: text))
        }
        if trimmed.hasPrefix("/") { return .hostPath(try checkedPath(trimmed, text: text)) }
        var repo = trimmed
        var named: String?
        if trimmed.hasPrefix("hf://") {
            repo = String(trimmed.dropFirst("hf://".count))
            if let at = repo.firstIndex(of: "@") {
                named = String(repo[repo.index(after: at)...])
                repo = String(repo[..<at])
            }
        } else if trimmed.contains("://") {
            throw WeightsSourceError(
                "'\(text)' has a scheme weights cannot come from; write owner/name or hf://owner/name@revision (Hugging Face), oci://REGISTRY/REPOSITORY:TAG or /abs/path")
        }
        guard Syntax.isHuggingFaceRepo(repo) else {
            throw WeightsSourceError(
                "'\(text)' is not a Hugging Face repository (owner/name, e.g. meta-llama/Llama-3.1-8B-Instruct), an oci:// reference or an absolute path")
        }
        let chosen = named ?? revision ?? defaultRevision
        guard isRevision(chosen) else {
            throw WeightsSourceError(
                "revision '\(chosen)' is not a branch, tag or commit; use letters, digits, '.', '_', '-' and '/', without '..'")
        }
        return .huggingFace(repo: repo, revision: chosen)
    }

    /// Whether `revision` is a safe branch, tag or commit name for a URL path.
    public static func isRevision(_ revision: String) -> Bool {
        guard (1...200).contains(revision.count), !revision.contains(".."), !revision.hasPrefix("/"), !revision.hasSuffix("/") else {
            return false
        }
        return revision.unicodeScalars.allSatisfy { isNameScalar($0) || $0 == "/" }
    }

    /// Whether `name` is a safe relative file path inside the weights (`model.gguf`,
    /// `sub/model.safetensors`): no leading `/`, no `.` or `..` component, no empty component.
    public static func isRelativeFile(_ name: String) -> Bool {
        guard (1...500).contains(name.count) else { return false }
        let parts = name.split(separator: "/", omittingEmptySubsequences: false)
        return parts.allSatisfy { part in
            !part.isEmpty && part != "." && part != ".."
                && part.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value != 0x7f && $0 != "\\" }
        }
    }

    private static func isNameScalar(_ s: Unicode.Scalar) -> Bool {
        (s >= "a" && s <= "z") || (s >= "A" && s <= "Z") || (s >= "0" && s <= "9") || s == "." || s == "_" || s == "-"
    }

    private static func checkedPath(_ path: String, text: String) throws(WeightsSourceError) -> String {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        guard !parts.isEmpty, !parts.contains(where: { $0 == "." || $0 == ".." }) else {
            throw WeightsSourceError("'\(text)' is not a plain absolute path; write /abs/path without '.' or '..' components")
        }
        return "/" + parts.joined(separator: "/")
    }

    private static func parseOCI(_ rest: String, text: String) throws(WeightsSourceError) -> OCIReference {
        let usage = "write oci://REGISTRY/REPOSITORY:TAG or oci://REGISTRY/REPOSITORY@sha256:DIGEST"
        guard let slash = rest.firstIndex(of: "/") else {
            throw WeightsSourceError("'\(text)' names no repository; \(usage)")
        }
        let registry = String(rest[..<slash])
        var path = String(rest[rest.index(after: slash)...])
        guard !registry.isEmpty, registry.unicodeScalars.allSatisfy({ isNameScalar($0) || $0 == ":" || $0 == "[" || $0 == "]" }),
            registry.first != "-"
        else {
            throw WeightsSourceError("'\(text)': '\(registry)' is not a registry host[:port]; \(usage)")
        }
        var digest: String?
        var tag: String?
        if let at = path.firstIndex(of: "@") {
            let value = String(path[path.index(after: at)...])
            path = String(path[..<at])
            guard value.hasPrefix("sha256:"), value.count == 71,
                value.dropFirst(7).unicodeScalars.allSatisfy({ ($0 >= "0" && $0 <= "9") || ($0 >= "a" && $0 <= "f") })
            else {
                throw WeightsSourceError("'\(text)': '\(value)' is not a digest; write sha256: and 64 lowercase hex digits")
            }
            digest = value
        }
        if let colon = path.lastIndex(of: ":"), !path[colon...].contains("/") {
            let value = String(path[path.index(after: colon)...])
            path = String(path[..<colon])
            if digest == nil {
                guard (1...128).contains(value.count), value.first != "." && value.first != "-",
                    value.unicodeScalars.allSatisfy(isNameScalar)
                else {
                    throw WeightsSourceError("'\(text)': '\(value)' is not a tag (letters, digits, '.', '_', '-'; at most 128)")
                }
                tag = value
            }
        }
        let components = path.split(separator: "/", omittingEmptySubsequences: false)
        guard !components.isEmpty, components.allSatisfy({ part in
            !part.isEmpty && part.first != "." && part.first != "-" && part.first != "_"
                && part.unicodeScalars.allSatisfy { ($0 >= "a" && $0 <= "z") || ($0 >= "0" && $0 <= "9") || $0 == "." || $0 == "_" || $0 == "-" }
        }) else {
            throw WeightsSourceError("'\(text)': '\(path)' is not a repository (lowercase path components); \(usage)")
        }
        guard tag != nil || digest != nil else {
            throw WeightsSourceError("'\(text)' names no tag or digest; \(usage) (weights are pinned: no implied :latest)")
        }
        return OCIReference(registry: registry, repository: path, tag: tag, digest: digest)
    }
}

/// Why a weights source cannot be used; ``message`` says what is wrong and how to write it.
public struct WeightsSourceError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What is wrong, and the fix.
    public var message: String

    /// Makes an error.
    public init(_ message: String) { self.message = message }

    public var description: String { message }
}

/// The weights a model server or a deployment instance loads, as its node-agent fetches and
/// mounts them: carried in ``ModelServer/Serving/weights`` and ``ReplicaSpec/weights``.
///
/// The node-agent fetches ``source`` into its weights cache (once per node, shared by every
/// server of the same source), verifies it, and mounts it read-only at ``mountPath``; the
/// engine's `--model` is ``enginePath`` (the mount, or the file in it that ``file`` names).
public struct ServingWeights: Codable, Sendable, Hashable {
    /// Where the weights are mounted in the serving container.
    public static let mountPath = "/weights"
    /// The secret var a deployment instance gets its Hugging Face token through
    /// (``ReplicaSpec/secretEnv``, naming ``tokenSecret``): the node-agent reads it from the
    /// replica's runtime to fetch, and the engine sees it as `huggingface_hub` expects.
    public static let tokenVariable = "HF_TOKEN"

    /// The source, as ``WeightsSource/description`` writes it (`oci://…`, `hf://owner/name@rev`,
    /// `/abs/path`).
    public var source: String
    /// The file inside the weights the engine loads (a catalog entry's `weightsFile`: the
    /// GGUF file of a llama-cpp model); nil: the engine gets the whole directory.
    public var file: String?
    /// For a Hugging Face source: the tenant secret holding the token (a deployment's
    /// `hf.token_secret`), never the token itself. The node-agent gets its value from the
    /// api-server (the replica's runtime) when it fetches.
    public var tokenSecret: String?

    /// Makes a description.
    public init(source: String, file: String? = nil, tokenSecret: String? = nil) {
        self.source = source
        self.file = file
        self.tokenSecret = tokenSecret
    }

    /// The source, parsed.
    public func parsed() throws(WeightsSourceError) -> WeightsSource { try WeightsSource.parse(source) }

    /// What the engine's `--model` names: ``mountPath``, or `mountPath/file`.
    public var enginePath: String { Self.enginePath(file: file) }

    /// ``mountPath``, or `mountPath/file`.
    public static func enginePath(file: String?) -> String {
        file.map { "\(mountPath)/\($0)" } ?? mountPath
    }
}
