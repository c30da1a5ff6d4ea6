import Foundation
import GPUPlaneCore
import GPUPlaneListener
import GPUPlaneService
import GPUPlaneStore
import GPUPlaneSystem
import Hummingbird
import Logging
import ServiceLifecycle

/// The `gpuplane-api-server` process: configuration, logging, the HTTP server, systemd.
public enum APIServerMain {
    /// The configuration keys (file `key = value`, env `GPUPLANE_<KEY>`, flags `--key`).
    public static let keys: [ConfigurationKey] = EtcdConnectionSettings.keys() + ServerTLS.keys + [
        ConfigurationKey("listen", .string, default: "127.0.0.1", help: "address to listen on"),
        ConfigurationKey("port", .int, default: "8080", help: "port to listen on"),
        ConfigurationKey(
            "auth-failure-limit", .int, default: "30",
            help: "unknown tokens one address may present per minute before it gets 429 until the minute is over (0: no limit)"),
        ConfigurationKey("agent-ca-file", .string, help: "PEM CA certificate to verify node-agents' https:// listeners with (container logs)"),
        ConfigurationKey("admin-token-file", .string, help: "file holding bootstrap admin tokens, one per line"),
        ConfigurationKey("catalog-file", .string, help: "operator catalog (JSON) overriding the bundled one"),
        ConfigurationKey("max-gpu-memory", .int, default: "96", help: "largest gpu.memoryGB the fleet can give"),
        ConfigurationKey("heartbeat-ttl", .int, default: "10", help: "seconds a node stays Ready without a heartbeat"),
        ConfigurationKey(
            "silent-after", .duration,
            help: "how long a node beating to this api-server may miss beats before it is marked silent (NotReady), longer by as much as this api-server reads beats late (up to twice); less than heartbeat-ttl (default: 3s, or two thirds of a shorter heartbeat-ttl)"),
        ConfigurationKey("deployment-image", .string, default: VLLM.image, help: "image custom LLM deployments run (it takes vllm serve's arguments)"),
        ConfigurationKey(
            "deployment-weights", .string, default: "engine",
            help: "who fetches a new deployment's hf.repo: engine (vLLM itself, with HF_TOKEN from hf.token_secret) or node-agent (the node's weights cache, mounted read-only at /weights)"),
        ConfigurationKey(
            "inference-timeout", .int, default: "600", help: "seconds one inference request may take through the gateway, streaming included"),
        ConfigurationKey(
            "app-timeout", .int, default: "3600",
            help: "seconds one request to an application URL (/apps/<tenant>/<app>/...) may take, streaming included"),
        ConfigurationKey(
            "public-url", .string,
            help: "the api-server's URL as clients reach it (e.g. https://gpu.example.com); application URLs start with it (default: http:// and the Host the client used)"),
        ConfigurationKey(
            "secret-key-file", .string,
            help: "file of the keys tenants' secrets are sealed with at rest, '<id> <base64 of 32 bytes>' a line, the first sealing, mode 0600 (without it, /v1/secrets answers 503)"),
        ConfigurationKey(
            "inference-queue-timeout", .int, default: "60",
            help: "seconds a deployment request may wait for a free slot (max_batch_size per instance) before 429, or for a ready instance of a deployment at zero before 503"),
        ConfigurationKey(
            "header-timeout", .int, default: "10", help: "seconds a new connection may take to send its first complete request head"),
        ConfigurationKey("body-timeout", .int, default: "30", help: "seconds a request body may pause between two reads"),
        ConfigurationKey(
            "keep-alive-timeout", .int, default: "60", help: "seconds a kept-alive connection may wait for its next request head"),
        ConfigurationKey(
            "max-connections-per-source", .int, default: "512",
            help: "open connections one client address may hold (watches included); 0 for no limit"),
        ConfigurationKey(
            "max-registrations-in-flight", .int, default: "\(RegistrationGate.defaultLimit)",
            help: "node registrations handled at once; more are answered 503 with Retry-After before touching etcd; 0 for no limit"),
        MemoryTrim.key,
        ConfigurationKey("log-level", .string, default: "info", help: "trace, debug, info, notice, warning, error"),
        ConfigurationKey("log-destination", .string, default: "automatic", help: "automatic, journald or stderr"),
    ]

    /// Caps glibc's malloc arenas at four (unless `MALLOC_ARENA_MAX` is set), not glibc's up to
    /// eight per core (docs/operations.md). Call from `main` before the first `await`: a thread
    /// that allocated before it (the first hop to the concurrency pool) keeps the arena it made.
    public static func limitMallocArenas() {
        SystemThread.limitMallocArenasUnlessSet(4)
    }

    /// Runs the server until SIGTERM.
    public static func run() async -> Int32 {
        do {
            let config = try Configuration.load(keys: keys, defaultConfigFile: "/etc/gpuplane/api-server.conf")
            let level = Logger.Level(rawValue: try config.string("log-level") ?? "info") ?? .info
            let destination = GPUPlaneLogging.Destination(rawValue: try config.string("log-destination") ?? "automatic") ?? .automatic
            GPUPlaneLogging.bootstrap(identifier: "gpuplane-api-server", level: level, destination: destination)
            _ = MetricsExporter.bootstrap()
            APIServerMetrics.register()
            HeapMetrics.register()
            try MemoryTrim.start(config)
            let logger = Logger(label: "gpuplane.api")
            let catalog = try Catalog.load(overrideFile: try config.string("catalog-file"))
            var adminTokens: [String] = []
            if let path = try config.string("admin-token-file") {
                adminTokens = try String(contentsOfFile: path, encoding: .utf8)
                    .split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
                    .filter { !$0.isEmpty && !$0.hasPrefix("#") }
            }
            if adminTokens.isEmpty { logger.warning("no admin token configured (--admin-token-file): only issued tokens will work") }
            let inferenceTimeout = try config.int("inference-timeout") ?? 600
            guard inferenceTimeout >= 1 else {
                throw ConfigurationError(code: .invalidValue, key: "inference-timeout", source: nil, detail: "must be at least 1 second, not \(inferenceTimeout)")
            }
            let queueTimeout = try config.int("inference-queue-timeout") ?? 60
            guard queueTimeout >= 1 else {
                throw ConfigurationError(
                    code: .invalidValue, key: "inference-queue-timeout", source: nil, detail: "must be at least 1 second, not \(queueTimeout)")
            }
            let appTimeout = try config.int("app-timeout") ?? 3600
            guard appTimeout >= 1 else {
                throw ConfigurationError(code: .invalidValue, key: "app-timeout", source: nil, detail: "must be at least 1 second, not \(appTimeout)")
            }
            let heartbeatTTL = Int64(try config.int("heartbeat-ttl") ?? 10)
            guard heartbeatTTL >= 1 else {
                throw ConfigurationError(
                    code: .invalidValue, key: "heartbeat-ttl", source: config.source(of: "heartbeat-ttl"),
                    detail: "must be at least 1 second, not \(heartbeatTTL)")
            }
            let silentAfter = try config.duration("silent-after") ?? HeartbeatTracker.defaultSilentAfter(ttl: heartbeatTTL)
            guard silentAfter > .zero, silentAfter < .seconds(heartbeatTTL) else {
                throw ConfigurationError(
                    code: .invalidValue, key: "silent-after", source: config.source(of: "silent-after"),
                    detail: "must be more than 0 and less than heartbeat-ttl (\(heartbeatTTL) s), not \(silentAfter)")
            }
            let etcd = try EtcdConnectionSettings(config)
            let store = try ResourceStore.connect(
                endpoints: etcd.endpoints, caFile: etcd.caFile, certFile: etcd.certFile, keyFile: etcd.keyFile,
                credentials: etcd.credentials.map { ($0.user, $0.password) }, logger: logger)
            let tls = try ServerTLS.load(config)
            let listen = try config.string("listen") ?? "127.0.0.1"
            if tls == nil, !ServerTLS.isLoopback(host: listen) {
                logger.warning(
                    "serving HTTP without TLS on a non-loopback address: bearer tokens cross the network in clear text; set tls-cert-file and tls-key-file (scripts/dev-certs makes a local CA and certificate)",
                    metadata: ["listen": "\(listen)"])
            }
            var deps = APIDependencies(
                store: store, catalog: catalog, adminTokens: adminTokens,
                maxGPUMemoryGB: try config.int("max-gpu-memory") ?? 96,
                deploymentImage: try config.string("deployment-image") ?? VLLM.image,
                heartbeatTTL: heartbeatTTL, inferenceTimeout: .seconds(inferenceTimeout),
                inferenceQueueTimeout: .seconds(queueTimeout), logger: logger, ingressTimeout: .seconds(appTimeout),
                publicURL: try config.string("public-url"), servesTLS: tls != nil, heartbeatSilentAfter: silentAfter)
            let registrations = try config.int("max-registrations-in-flight") ?? RegistrationGate.defaultLimit
            guard registrations >= 0 else {
                throw ConfigurationError(
                    code: .invalidValue, key: "max-registrations-in-flight", source: config.source(of: "max-registrations-in-flight"),
                    detail: "must be 0 (no limit) or more, not \(registrations)")
            }
            deps.registrations = RegistrationGate(limit: registrations)
            switch try config.string("deployment-weights") ?? "engine" {
            case "engine": break
            case "node-agent": deps.deploymentWeightsByAgent = true
            case let other:
                throw ConfigurationError(
                    code: .invalidValue, key: "deployment-weights", source: config.source(of: "deployment-weights"),
                    detail: "must be engine or node-agent, not '\(other)'")
            }
            if let path = try config.string("secret-key-file") {
                deps.secretKeys = try SecretKeyring.load(path: path)
            } else {
                logger.warning("no secret-key-file configured: /v1/secrets answers 503 and pods with secret vars cannot start")
            }
            if let agentCA = try config.string("agent-ca-file") {
                guard FileManager.default.isReadableFile(atPath: agentCA) else {
                    throw ConfigurationError(
                        code: .invalidValue, key: "agent-ca-file", source: config.source(of: "agent-ca-file"),
                        detail: "cannot read '\(agentCA)'")
                }
                deps.agentLink = AgentLink(keys: deps.inferenceKeys, caFile: agentCA)
            }
            let failureLimit = try config.int("auth-failure-limit") ?? 30
            guard failureLimit >= 0 else {
                throw ConfigurationError(
                    code: .invalidValue, key: "auth-failure-limit", source: config.source(of: "auth-failure-limit"),
                    detail: "must be 0 (no limit) or more, not \(failureLimit)")
            }
            if failureLimit > 0 { deps.authFailureLimiter = AuthFailureLimiter(limit: failureLimit) }
            let readiness = ReadinessTracker(components: ["etcd"])
            let limits = try connectionLimits(config)
            FileLimit.raiseToHardLimit()
            let app = try buildApplication(
                deps, host: listen, port: try config.int("port") ?? 8080, limits: limits, tls: tls)
            let daemon = Daemon(
                // Services stop in reverse: the tracker drains before the server stops listening.
                services: [EtcdReadiness(store: store, readiness: readiness, logger: logger), app, HeartbeatDrain(tracker: deps.heartbeats)],
                readiness: readiness, readyStatus: "serving", shutdownGrace: apiServerShutdownGrace, logger: logger)
            try await daemon.run()
            return 0
        } catch {
            FileHandle.standardError.write(Data("gpuplane-api-server: \(error)\n".utf8))
            return 1
        }
    }
}

extension APIServerMain {
    /// The connection limits of `config`, each checked.
    static func connectionLimits(_ config: Configuration) throws -> ConnectionLimits {
        func seconds(_ key: String, _ fallback: Int) throws -> Duration {
            let value = try config.int(key) ?? fallback
            guard (1...86_400).contains(value) else {
                throw ConfigurationError(code: .invalidValue, key: key, source: nil, detail: "must be 1–86400 seconds, not \(value)")
            }
            return .seconds(value)
        }
        let perSource = try config.int("max-connections-per-source") ?? 512
        guard perSource >= 0 else {
            throw ConfigurationError(
                code: .invalidValue, key: "max-connections-per-source", source: nil, detail: "must be 0 (no limit) or more, not \(perSource)")
        }
        return ConnectionLimits(
            headerTimeout: try seconds("header-timeout", 10), bodyTimeout: try seconds("body-timeout", 30),
            keepAliveTimeout: try seconds("keep-alive-timeout", 60), maxConnectionsPerSource: perSource)
    }
}

/// Drains the heartbeat tracker (``HeartbeatTracker/drain()``) as graceful shutdown begins,
/// before the server stops taking connections.
struct HeartbeatDrain: Service {
    let tracker: HeartbeatTracker

    func run() async throws {
        try? await gracefulShutdown()
        tracker.drain()
    }
}

/// Marks the daemon ready once etcd answers, retrying with backoff until then.
struct EtcdReadiness: Service {
    let store: ResourceStore
    let readiness: ReadinessTracker
    let logger: Logger

    func run() async throws {
        var delay: UInt64 = 100_000_000
        while !Task.isCancelled {
            do {
                try await store.ping()
                readiness.markReady("etcd")
                logger.info("etcd answers; ready")
                break
            } catch {
                logger.warning("etcd does not answer yet", metadata: ["error": "\(error)"])
                try? await Task.sleep(nanoseconds: delay)
                delay = min(delay * 2, 5_000_000_000)
            }
        }
        // Stay up until shutdown so the group keeps running.
        try? await gracefulShutdown()
    }
}
