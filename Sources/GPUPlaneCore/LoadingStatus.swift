/// How far a model server or a deployment instance is with its weights and its engine: the
/// stage beside its phase (``ReplicaStatus/loading``), reported by its node-agent.
///
/// `fetching` (the node-agent fetches the weights into its cache: ``bytesDone`` of
/// ``bytesTotal``) → `loading` (the container runs, its engine does not answer `/v1/models`
/// yet) → `ready`; or `failed`, with ``reason`` (``Reason``), the words in ``message`` and,
/// when the engine exited, its last log lines (``logTail``).
public struct LoadingStatus: Codable, Sendable, Hashable {
    /// The stages.
    public enum Stage: String, Codable, Sendable, CaseIterable {
        /// The weights are being fetched into the node's cache.
        case fetching
        /// The container runs; the engine loads the weights and does not answer yet.
        case loading
        /// The engine answers `/v1/models`.
        case ready
        /// Fetching or loading failed; see ``LoadingStatus/reason``. The agent tries again after a backoff.
        case failed
    }

    /// Why loading failed, as a name a program can match (a string, so older readers decode newer reasons).
    public struct Reason: RawRepresentable, Codable, Sendable, Hashable {
        /// The name.
        public var rawValue: String
        /// Makes a reason.
        public init(rawValue: String) { self.rawValue = rawValue }
        /// Decodes a bare string.
        public init(from decoder: any Decoder) throws { rawValue = try decoder.singleValueContainer().decode(String.self) }
        /// Encodes a bare string.
        public func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            try container.encode(rawValue)
        }

        /// The weights could not be fetched (no such tag or repository, registry or Hub
        /// unreachable, refused credentials, no room in the cache).
        public static let fetchFailed = Reason(rawValue: "WeightsFetchFailed")
        /// A fetched file did not match its digest (OCI) or its size or sha256 (Hugging Face).
        public static let verificationFailed = Reason(rawValue: "WeightsVerificationFailed")
        /// A host path or the weights file the catalog names is missing.
        public static let weightsMissing = Reason(rawValue: "WeightsMissing")
        /// The engine exited before (or after) answering; ``LoadingStatus/logTail`` has its last lines.
        public static let engineExited = Reason(rawValue: "EngineExited")
    }

    /// The stage.
    public var stage: Stage
    /// Words: "fetching weights 3.2/16.1 GB", "loading weights into the engine", the failure.
    public var message: String?
    /// Bytes of the weights fetched so far (fetching), or their size once fetched.
    public var bytesDone: Int64?
    /// The size of the weights, bytes, once known.
    public var bytesTotal: Int64?
    /// How long the fetch took, seconds (0 when the node's cache held them already).
    public var fetchSeconds: Double?
    /// From the container's start to the engine's first answer, seconds (ready only).
    public var loadSeconds: Double?
    /// Why it failed (failed only).
    public var reason: Reason?
    /// The engine's last log lines, when it exited (failed only).
    public var logTail: [String]?

    /// Makes a status.
    public init(
        stage: Stage, message: String? = nil, bytesDone: Int64? = nil, bytesTotal: Int64? = nil, fetchSeconds: Double? = nil,
        loadSeconds: Double? = nil, reason: Reason? = nil, logTail: [String]? = nil
    ) {
        self.stage = stage
        self.message = message
        self.bytesDone = bytesDone
        self.bytesTotal = bytesTotal
        self.fetchSeconds = fetchSeconds
        self.loadSeconds = loadSeconds
        self.reason = reason
        self.logTail = logTail
    }

    /// "3.2/16.1 GB" (decimal units: GB from 1 GB, MB below, kB below 1 MB).
    public static func progressText(done: Int64, total: Int64?) -> String {
        let scale = max(done, total ?? 0)
        let (unit, divisor): (String, Double) = scale >= 1_000_000_000 ? ("GB", 1e9) : scale >= 1_000_000 ? ("MB", 1e6) : ("kB", 1e3)
        func one(_ value: Int64) -> String {
            let tenths = Int64((Double(value) / divisor * 10).rounded(.down))
            return "\(tenths / 10).\(tenths % 10)"
        }
        guard let total else { return "\(one(done)) \(unit)" }
        return "\(one(done))/\(one(total)) \(unit)"
    }
}
