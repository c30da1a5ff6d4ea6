import CurlHTTP
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import GPUPlaneSystem
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// How the node-agent's weights cache is set up (`weights-cache`, `weights-cache-size` and
/// the settings beside them).
public struct WeightsCacheSettings: Sendable {
    /// The cache's directory (`weights-cache`): `entries/<address>/` holds complete weights,
    /// `partial/` fetches under way (emptied at start), `refs/` which address a tag or branch
    /// resolved to.
    public var directory: String
    /// The size the cache is kept under by evicting the least recently used weights that no
    /// container of the node uses (`weights-cache-size`), bytes.
    public var sizeLimitBytes: Int64
    /// Logins to weights registries by `host[:port]`, from `weights-registry-auth-file`.
    public var registryLogins: [String: WeightsRegistryLogin] = [:]
    /// Registries spoken to over plain HTTP besides loopback ones (`weights-insecure-registries`).
    public var plainHTTPRegistries: Set<String> = []
    /// The Hugging Face Hub's base URL (`hf-endpoint`, else `$HF_ENDPOINT`, else https://huggingface.co).
    public var huggingFaceEndpoint: String = "https://huggingface.co"
    /// The deadline of one file's transfer.
    public var fileTimeout: Duration = .seconds(6 * 3600)
    /// The deadline of one small request (a manifest, a token, the Hub's model info).
    public var requestTimeout: Duration = .seconds(30)
    /// Attempts per request (idempotent GETs are sent again after a failure without answer or a 5xx).
    public var attempts: Int = 3
    /// How often a fetch's progress is reported at most.
    public var progressInterval: Duration = .seconds(2)

    /// Makes settings.
    public init(directory: String, sizeLimitBytes: Int64) {
        self.directory = directory
        self.sizeLimitBytes = sizeLimitBytes
    }

    /// Reads a containers auth file (`auth.json`, Docker's `config.json`):
    /// `{"auths": {"host:port": {"auth": base64("user:password")}}}` (or `username`/`password`).
    public static func registryLogins(authFile path: String) throws(WeightsError) -> [String: WeightsRegistryLogin] {
        struct File: Decodable {
            struct Auth: Decodable {
                var auth: String?
                var username: String?
                var password: String?
            }
            var auths: [String: Auth]
        }
        guard let text = WeightsFiles.readText(path) else { throw WeightsFiles.failure("read", path) }
        let file: File
        do {
            file = try JSONDecoder().decode(File.self, from: Data(text.utf8))
        } catch {
            throw WeightsError(.invalid, "\(path) is not an auth file ({\"auths\": {\"host:port\": {\"auth\": \"base64(user:password)\"}}})")
        }
        var logins: [String: WeightsRegistryLogin] = [:]
        for (server, auth) in file.auths {
            let host = RegistryCredential.normalized(server)
            if let user = auth.username, let password = auth.password {
                logins[host] = WeightsRegistryLogin(username: user, password: password)
            } else if let encoded = auth.auth, let data = Data(base64Encoded: encoded),
                let colon = data.firstIndex(of: UInt8(ascii: ":"))
            {
                logins[host] = WeightsRegistryLogin(
                    username: String(decoding: data[..<colon], as: UTF8.self),
                    password: String(decoding: data[data.index(after: colon)...], as: UTF8.self))
            } else {
                throw WeightsError(.invalid, "\(path): the entry for \(server) has neither auth nor username and password")
            }
        }
        return logins
    }
}

/// A login to a weights registry; its description never shows the password.
public struct WeightsRegistryLogin: Sendable, Hashable, CustomStringConvertible {
    /// The user.
    public var username: String
    /// The password or token.
    public var password: String

    /// Makes a login.
    public init(username: String, password: String) {
        self.username = username
        self.password = password
    }

    public var description: String { "login \(username)" }
}

/// Why weights could not be had. Its message names the source and what went wrong, never a
/// token or password.
public struct WeightsError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What kind of failure.
    public enum Code: String, Sendable, Hashable {
        /// No such repository, tag, revision or file.
        case notFound
        /// The registry or Hub refused the credentials, or wants some.
        case unauthorized
        /// No answer (connection refused, timeout, a 5xx after the retries).
        case unreachable
        /// A file's digest, sha256 or size differs from what was named.
        case verification
        /// A host path or the file the catalog names is missing.
        case missing
        /// An answer or setting that cannot be used (an image index, a bad file name).
        case invalid
        /// The cache's disk (a write, a rename).
        case storage
    }

    /// The kind.
    public var code: Code
    /// The words.
    public var message: String

    /// Makes an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }

    /// The loading status's reason for it.
    public var loadingReason: LoadingStatus.Reason {
        switch code {
        case .verification: return .verificationFailed
        case .missing: return .weightsMissing
        default: return .fetchFailed
        }
    }
}

/// Weights in the cache (or a host path): where they are and how big.
public struct WeightsEntry: Sendable, Hashable {
    /// The content address (`oci-sha256-<manifest digest>`, `hf-<commit>`); the path itself for a host path.
    public var address: String
    /// The directory (or host path) mounted read-only into the container.
    public var path: String
    /// Their size, bytes.
    public var bytes: Int64
}

/// One fetch under way or done, shared by every server of the node that needs the same
/// source (single flight). Updated from the fetching task, read by reconcile passes.
public final class WeightsFetchJob: Sendable {
    /// The source.
    public let source: WeightsSource
    /// A Hugging Face token for the fetch (never logged, never in a status).
    let token: String?
    private let state: Locked<State>

    struct State {
        var done: Int64 = 0
        var total: Int64?
        var outcome: Result<WeightsEntry, WeightsError>?
        var seconds: Double?
        var lastSignal: ContinuousClock.Instant?
    }

    init(source: WeightsSource, token: String?) {
        self.source = source
        self.token = token
        self.state = Locked(State())
    }

    /// Bytes fetched so far and the total, once known.
    public var progress: (done: Int64, total: Int64?) { state.withLock { ($0.done, $0.total) } }
    /// How it ended; nil while it runs.
    public var outcome: Result<WeightsEntry, WeightsError>? { state.withLock { $0.outcome } }
    /// How long it took, seconds, once ended.
    public var seconds: Double? { state.withLock { $0.seconds } }

    /// "fetching weights 3.2/16.1 GB".
    public var progressMessage: String {
        let (done, total) = progress
        return "fetching weights " + LoadingStatus.progressText(done: done, total: total)
    }

    /// Records progress; returns whether a pass should report it now (at most once per `interval`).
    func record(done: Int64, total: Int64?, interval: Duration, now: ContinuousClock.Instant) -> Bool {
        state.withLock { state in
            state.done = done
            if let total { state.total = total }
            if let last = state.lastSignal, now - last < interval { return false }
            state.lastSignal = now
            return true
        }
    }

    func finish(_ outcome: Result<WeightsEntry, WeightsError>, seconds: Double) {
        state.withLock {
            $0.outcome = outcome
            $0.seconds = seconds
            if case .success(let entry) = outcome {
                $0.done = entry.bytes
                $0.total = entry.bytes
            }
        }
    }
}

/// The node-agent's content-addressed weights cache.
///
/// Each source is fetched once per node: a second server of the same source joins the fetch
/// under way (``fetch(_:token:)``) or finds the weights in place (``resolve(_:)``). A fetch
/// writes into `partial/<random>/`, verifies every file (OCI: each blob's sha256 against its
/// digest; Hugging Face: the LFS sha256, else the size), and only then renames the directory
/// to `entries/<address>` (the OCI manifest's digest; the Hugging Face commit), so a server
/// never sees partial files; a crash mid-fetch leaves only `partial/`, emptied at start.
/// A tag or branch is resolved once per node (`refs/`) and not asked again while its weights
/// are cached. A host path is mounted as it is: no copy.
///
/// When the cache passes ``WeightsCacheSettings/sizeLimitBytes``, the least recently used
/// weights (a directory's modification time, set each time a container is made with it) are
/// removed, except those that a container of the node mounts or a server bound here wants
/// (``setInUse(_:)``).
public final class WeightsCache: Sendable {
    /// The settings.
    public let settings: WeightsCacheSettings
    let http: CurlHTTP.Client
    let logger: Logger
    private let state = Locked(State())
    private let hook = LockedAction()
    private let clock = ContinuousClock()

    struct State {
        var entries: [String: Stored] = [:]
        var jobs: [String: WeightsFetchJob] = [:]
        var inUse: Set<String> = []
        var statistics = Statistics()
        var overLimitLogged = false
    }

    struct Stored {
        var bytes: Int64
        /// Nanoseconds since the epoch (the directory's modification time).
        var lastUsed: Int64
    }

    /// What the cache did so far.
    public struct Statistics: Sendable, Hashable {
        /// Fetches that transferred weights (not those that found them cached).
        public var fetches = 0
        /// Files (blobs) transferred.
        public var filesFetched = 0
        /// Bytes transferred.
        public var bytesFetched: Int64 = 0
        /// Weights evicted.
        public var evictions = 0
    }

    /// Makes a cache over `settings.directory`; call ``prepare()`` before use.
    public init(settings: WeightsCacheSettings, http: CurlHTTP.Client, logger: Logger) {
        self.settings = settings
        self.http = http
        self.logger = logger
    }

    var entriesDirectory: String { settings.directory + "/entries" }
    var partialDirectory: String { settings.directory + "/partial" }
    var refsDirectory: String { settings.directory + "/refs" }

    /// Called when a fetch progressed (at most every ``WeightsCacheSettings/progressInterval``) or ended.
    func setHook(_ body: @escaping @Sendable () -> Void) { hook.set(body) }

    func hookValue() { hook() }

    /// What the cache did so far.
    public var statistics: Statistics { state.withLock { $0.statistics } }

    /// The bytes of the complete weights held.
    public var cachedBytes: Int64 { state.withLock { $0.entries.values.reduce(0) { $0 + $1.bytes } } }

    /// The content addresses held.
    public var addresses: Set<String> { state.withLock { Set($0.entries.keys) } }

    /// Makes the directories, removes what a crash left in `partial/`, and reads what the
    /// cache holds. Blocking (a walk of the cache): run at the agent's start.
    public func prepare() throws(WeightsError) {
        for path in [entriesDirectory, partialDirectory, refsDirectory] { try WeightsFiles.makeDirectories(path) }
        for name in WeightsFiles.list(partialDirectory) {
            logger.notice("removing a partial weights fetch left by an earlier run", metadata: ["path": "\(partialDirectory)/\(name)"])
            WeightsFiles.removeTree(partialDirectory + "/" + name)
        }
        var entries: [String: Stored] = [:]
        for name in WeightsFiles.list(entriesDirectory) {
            let path = entriesDirectory + "/" + name
            guard WeightsFiles.isDirectory(path) else { continue }
            entries[name] = Stored(bytes: WeightsFiles.size(path), lastUsed: WeightsFiles.modifiedNanoseconds(path))
        }
        state.withLock { $0.entries = entries }
        publishGauges()
        logger.info(
            "weights cache ready",
            metadata: ["directory": "\(settings.directory)", "entries": "\(entries.count)", "bytes": "\(cachedBytes)",
                       "limit": "\(settings.sizeLimitBytes)"])
    }

    /// The weights of `source` when they can be had without fetching: a host path that
    /// exists, or cached weights (by digest or commit, or by a tag or branch resolved before).
    public func resolve(_ source: WeightsSource) -> WeightsEntry? {
        if case .hostPath(let path) = source {
            return WeightsFiles.exists(path) ? WeightsEntry(address: path, path: path, bytes: 0) : nil
        }
        guard let address = knownAddress(source) else { return nil }
        return state.withLock { state in
            state.entries[address].map { WeightsEntry(address: address, path: entriesDirectory + "/" + address, bytes: $0.bytes) }
        }
    }

    /// The address `source` is known to have: fixed by a digest or commit, else the one its
    /// tag or branch resolved to last.
    func knownAddress(_ source: WeightsSource) -> String? {
        switch source {
        case .hostPath(let path): return path
        case .oci(let reference):
            if let digest = reference.digest { return Self.ociAddress(digest) }
        case .huggingFace(_, let revision):
            if Self.isCommit(revision) { return "hf-\(revision)" }
        }
        guard let text = WeightsFiles.readText(refPath(source)) else { return nil }
        let address = String(text.filter { !$0.isWhitespace })
        return address.isEmpty ? nil : address
    }

    /// The content address of an OCI manifest digest (`sha256:…` → `oci-sha256-…`).
    static func ociAddress(_ digest: String) -> String { "oci-" + String(digest.map { $0 == ":" ? "-" : $0 }) }

    /// Whether `revision` is a full commit id (40 hex digits).
    static func isCommit(_ revision: String) -> Bool {
        revision.count == 40 && revision.unicodeScalars.allSatisfy { ($0 >= "0" && $0 <= "9") || ($0 >= "a" && $0 <= "f") }
    }

    func refPath(_ source: WeightsSource) -> String {
        var hash = PortableSHA256.Hasher()
        hash.update(Array(source.description.utf8))
        return refsDirectory + "/" + hash.finalizeHex()
    }

    /// The fetch of `source` under way, or a new one (single flight: every server of the node
    /// that needs `source` gets the same job). `token` is a Hugging Face token (never logged).
    public func fetch(_ source: WeightsSource, token: String? = nil) -> WeightsFetchJob {
        let key = source.description
        let (job, started) = state.withLock { state -> (WeightsFetchJob, Bool) in
            if let running = state.jobs[key] { return (running, false) }
            let job = WeightsFetchJob(source: source, token: token)
            state.jobs[key] = job
            return (job, true)
        }
        guard started else { return job }
        logger.info("fetching weights", metadata: ["source": "\(key)"])
        let start = clock.now
        Task {
            let outcome: Result<WeightsEntry, WeightsError>
            do throws(WeightsError) {
                outcome = .success(try await self.run(job))
            } catch {
                outcome = .failure(error)
            }
            let elapsed = (clock.now - start).seconds
            job.finish(outcome, seconds: elapsed)
            self.state.withLock { state in
                if state.jobs[key] === job { state.jobs[key] = nil }
            }
            switch outcome {
            case .success(let entry):
                WeightsMetrics.fetchSeconds.recordSeconds(elapsed)
                WeightsMetrics.fetched.increment()
                self.logger.notice(
                    "weights fetched and verified",
                    metadata: ["source": "\(key)", "address": "\(entry.address)", "bytes": "\(entry.bytes)",
                               "seconds": "\(elapsed)"])
            case .failure(let error):
                WeightsMetrics.failed.increment()
                self.logger.error("weights fetch failed", metadata: ["source": "\(key)", "code": "\(error.code.rawValue)", "reason": "\(error.message)"])
            }
            self.evict()
            self.hook()
        }
        return job
    }

    private func run(_ job: WeightsFetchJob) async throws(WeightsError) -> WeightsEntry {
        switch job.source {
        case .hostPath(let path):
            guard WeightsFiles.exists(path) else { throw WeightsError(.missing, "host path \(path) does not exist on this node") }
            return WeightsEntry(address: path, path: path, bytes: 0)
        case .oci(let reference):
            return try await OCIWeightsFetcher(cache: self, job: job).fetch(reference)
        case .huggingFace(let repo, let revision):
            return try await HuggingFaceWeightsFetcher(cache: self, job: job).fetch(repo: repo, revision: revision, token: job.token)
        }
    }

    /// A fresh directory under `partial/` for one fetch.
    func partialPath() throws(WeightsError) -> String {
        let path = partialDirectory + "/" + String(UInt64.random(in: 0...UInt64.max), radix: 16)
        guard mkdir(path, 0o755) == 0 else { throw WeightsFiles.failure("make the directory", path) }
        return path
    }

    /// The entry at `address` when the cache holds it; remembers that `source` resolved to it.
    func existing(_ address: String, source: WeightsSource) -> WeightsEntry? {
        guard let bytes = state.withLock({ $0.entries[address]?.bytes }) else { return nil }
        try? WeightsFiles.writeAtomically(refPath(source), address)
        return WeightsEntry(address: address, path: entriesDirectory + "/" + address, bytes: bytes)
    }

    /// Moves a complete, verified fetch in `partial` to its address (atomically), records it
    /// and that `source` resolved to it, and keeps it from eviction until the next ``setInUse(_:)``.
    func commit(_ partial: String, address: String, source: WeightsSource) throws(WeightsError) -> WeightsEntry {
        let path = entriesDirectory + "/" + address
        let bytes = WeightsFiles.size(partial)
        if WeightsFiles.isDirectory(path) {
            // Fetched meanwhile under another name (a second tag of the same manifest).
            WeightsFiles.removeTree(partial)
        } else {
            try WeightsFiles.move(partial, path)
        }
        try WeightsFiles.writeAtomically(refPath(source), address)
        let now = WeightsFiles.nowNanoseconds()
        state.withLock { state in
            state.entries[address] = Stored(bytes: bytes, lastUsed: now)
            state.inUse.insert(address)
            state.statistics.fetches += 1
        }
        publishGauges()
        return WeightsEntry(address: address, path: path, bytes: bytes)
    }

    /// Counts a transferred file.
    func countTransfer(bytes: Int64) {
        state.withLock {
            $0.statistics.filesFetched += 1
            $0.statistics.bytesFetched += bytes
        }
        WeightsMetrics.fetchedBytes.increment(by: Int(bytes))
    }

    /// Marks `address` used now (a container is being made with it): the last to be evicted.
    public func markUsed(_ address: String) {
        let path = entriesDirectory + "/" + address
        guard state.withLock({ $0.entries[address] != nil }) else { return }
        WeightsFiles.touch(path)
        let now = WeightsFiles.nowNanoseconds()
        state.withLock { $0.entries[address]?.lastUsed = now }
    }

    /// The addresses that must stay (mounted by a container of the node, or wanted by a server
    /// bound here); then evicts what the limit asks.
    public func setInUse(_ addresses: Set<String>) {
        state.withLock { $0.inUse = addresses }
        evict()
    }

    /// Removes least recently used weights not in use until the cache is under its limit.
    func evict() {
        while true {
            let victim = state.withLock { state -> (String, Int64, Int64)? in
                let total = state.entries.values.reduce(0) { $0 + $1.bytes }
                guard total > settings.sizeLimitBytes else {
                    state.overLimitLogged = false
                    return nil
                }
                let candidates = state.entries.filter { !state.inUse.contains($0.key) }
                guard let oldest = candidates.min(by: { ($0.value.lastUsed, $0.key) < ($1.value.lastUsed, $1.key) }) else {
                    return ("", total, 0)
                }
                state.entries[oldest.key] = nil
                state.statistics.evictions += 1
                return (oldest.key, total, oldest.value.bytes)
            }
            guard let (address, total, bytes) = victim else { break }
            if address.isEmpty {
                let first = state.withLock { state -> Bool in
                    defer { state.overLimitLogged = true }
                    return !state.overLimitLogged
                }
                if first {
                    logger.warning(
                        "weights cache is over its limit, but every entry is in use",
                        metadata: ["bytes": "\(total)", "limit": "\(settings.sizeLimitBytes)"])
                }
                break
            }
            // Out of entries/ first (a rename), so no later mount can find it half removed.
            let doomed = partialDirectory + "/evicted-" + address
            do {
                try WeightsFiles.move(entriesDirectory + "/" + address, doomed)
                WeightsFiles.removeTree(doomed)
            } catch {
                logger.warning("cannot remove evicted weights", metadata: ["address": "\(address)", "error": "\(error)"])
            }
            WeightsMetrics.evictions.increment()
            logger.notice(
                "evicted least recently used weights",
                metadata: ["address": "\(address)", "bytes": "\(bytes)", "cache": "\(total - bytes)", "limit": "\(settings.sizeLimitBytes)"])
        }
        publishGauges()
    }

    private func publishGauges() {
        WeightsMetrics.cacheBytes.record(cachedBytes)
        WeightsMetrics.cacheLimitBytes.record(settings.sizeLimitBytes)
    }
}
