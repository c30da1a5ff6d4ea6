#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import CurlHTTP
import GPUPlaneCore
import GPUPlaneService
import GPUPlaneSystem
import Logging
import ServiceLifecycle

/// The `gpuplane-hollow-nodes` process: N ``HollowFleet`` nodes against one or more
/// api-servers, until SIGTERM.
///
/// Node tokens come from `token-file` (lines `<node> <token>`) when it lists every node;
/// otherwise they are issued with the admin token of `admin-token-file`
/// (`POST /v1/tokens`) and, when `token-file` is set, written there for the next run.
public enum HollowFleetMain {
    /// The configuration keys (flags `--key`, env `GPUPLANE_<KEY>`).
    public static let keys: [ConfigurationKey] = [
        ConfigurationKey("api-server", .string, default: "http://127.0.0.1:8080", help: "api-server base URLs, comma-separated; each node calls the one its name picks, as node-agents do"),
        ConfigurationKey("nodes", .int, default: "100", help: "how many hollow nodes"),
        ConfigurationKey("name-prefix", .string, default: "hollow", help: "nodes are named <prefix>-<index>"),
        ConfigurationKey("first-index", .int, default: "0", help: "the first node's index (for several fleet processes)"),
        ConfigurationKey("token-file", .string, help: "node tokens, one '<node> <token>' per line; written when tokens are issued"),
        ConfigurationKey("admin-token-file", .string, help: "an admin token, to issue the node tokens token-file lacks"),
        ConfigurationKey("heartbeat-interval", .duration, default: "1s", help: "how often each node beats"),
        ConfigurationKey("run-delay", .duration, default: "1s", help: "binding seen → replica reported running"),
        ConfigurationKey("xid-every", .duration, help: "an XID 79 on a random GPU this often (default: none)"),
        ConfigurationKey("xid-heal", .duration, default: "30s", help: "how long an injected XID keeps its GPU unhealthy"),
        ConfigurationKey("start-rate", .int, default: "200", help: "nodes started per second"),
        ConfigurationKey("nodes-per-transport", .int, default: "25", help: "nodes sharing one libcurl thread"),
        ConfigurationKey("request-timeout", .duration, default: "10s", help: "deadline of one api-server call"),
        NodeAgentMain.returnAfterKey,
        ConfigurationKey("journal-file", .string, help: "append 'seen|running <tenant>/<replica> <unix ms>' lines here"),
        ConfigurationKey("stats-interval", .duration, default: "10s", help: "how often a statistics line is logged (notice)"),
        ConfigurationKey("machine-type", .string, help: "every node 8 GPUs of this GPU machine type (default: a mix of H100, A100, L40, RTX 4090 and CPU-only hosts)"),
        ConfigurationKey("seed", .int, default: "1", help: "the fault injector's seed"),
        ConfigurationKey("log-level", .string, default: "notice", help: "trace, debug, info, notice, warning, error"),
        ConfigurationKey("log-destination", .string, default: "stderr", help: "automatic, journald or stderr"),
    ]

    /// Why the fleet cannot start.
    public struct StartError: Error, CustomStringConvertible {
        /// Words.
        public let description: String
    }

    /// Runs the fleet until SIGTERM; returns the exit status.
    public static func run() async -> Int32 {
        _ = FileLimit.raiseToHardLimit()
        do {
            let config = try Configuration.load(keys: keys, defaultConfigFile: nil)
            let level = Logger.Level(rawValue: try config.string("log-level") ?? "notice") ?? .notice
            let destination = GPUPlaneLogging.Destination(rawValue: try config.string("log-destination") ?? "stderr") ?? .stderr
            GPUPlaneLogging.bootstrap(identifier: "gpuplane-hollow-nodes", level: level, destination: destination)
            let logger = Logger(label: "gpuplane.hollow")
            let servers = (try config.string("api-server") ?? "http://127.0.0.1:8080").split(separator: ",").map {
                String($0).trimmingWhitespace()
            }
            var configuration = HollowFleetConfiguration(apiServers: servers, nodes: try config.int("nodes") ?? 100, logger: logger)
            guard configuration.nodes >= 1 else { throw StartError(description: "nodes must be 1 or more") }
            configuration.namePrefix = try config.string("name-prefix") ?? "hollow"
            guard Syntax.isDNSLabel(configuration.namePrefix + "-0") else {
                throw StartError(description: "name-prefix '\(configuration.namePrefix)' does not make DNS labels")
            }
            configuration.firstIndex = try config.int("first-index") ?? 0
            configuration.heartbeatInterval = try config.duration("heartbeat-interval") ?? .seconds(1)
            configuration.runDelay = try config.duration("run-delay") ?? .seconds(1)
            configuration.xidEvery = try config.duration("xid-every")
            configuration.xidHeal = try config.duration("xid-heal") ?? .seconds(30)
            configuration.startRate = max(1, try config.int("start-rate") ?? 200)
            configuration.nodesPerTransport = max(1, try config.int("nodes-per-transport") ?? 25)
            configuration.requestTimeout = try config.duration("request-timeout") ?? .seconds(10)
            configuration.returnAfter = try NodeAgentMain.returnAfter(config)
            configuration.journalPath = try config.string("journal-file")
            if let name = try config.string("machine-type") {
                guard let type = configuration.machineTypes.named(name), type.family == .gpu else {
                    throw StartError(description: "machine-type '\(name)' is not a GPU machine type (e.g. GPU-H100)")
                }
                configuration.shape = HollowNodeShape(machineType: type)
            }
            configuration.seed = UInt64(truncatingIfNeeded: try config.int("seed") ?? 1)
            let tokens = try await nodeTokens(
                names: configuration.nodeNames, apiServer: servers[0], tokenFile: try config.string("token-file"),
                adminTokenFile: try config.string("admin-token-file"), logger: logger)
            let fleet: HollowFleet
            do { fleet = try HollowFleet(configuration: configuration, tokens: tokens) } catch {
                throw StartError(description: error.description)
            }
            let service = HollowFleetService(fleet: fleet, statsInterval: try config.duration("stats-interval") ?? .seconds(10), logger: logger)
            logger.notice(
                "hollow fleet starting",
                metadata: ["nodes": "\(configuration.nodes)", "apiServers": "\(servers.joined(separator: ","))"])
            try await Daemon(services: [service], notifier: .disabled, logger: logger).run()
            return 0
        } catch {
            let line = Array("gpuplane-hollow-nodes: \(error)\n".utf8)
            _ = line.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
            return 1
        }
    }

    /// Every node's token: from `tokenFile`, the rest issued with the admin token.
    static func nodeTokens(
        names: [String], apiServer: String, tokenFile: String?, adminTokenFile: String?, logger: Logger
    ) async throws -> [String: String] {
        var tokens: [String: String] = [:]
        if let tokenFile, let text = try? SystemFile.readText(tokenFile) {
            for line in text.split(separator: "\n") {
                let parts = line.split(separator: " ")
                if parts.count == 2 { tokens[String(parts[0])] = String(parts[1]) }
            }
        }
        let missing = names.filter { tokens[$0] == nil }
        guard !missing.isEmpty else { return tokens }
        guard let adminTokenFile else {
            throw StartError(description: "\(missing.count) nodes have no token in token-file; set admin-token-file to issue them")
        }
        let admin: String
        do { admin = try SystemFile.readText(adminTokenFile).trimmingWhitespace() } catch {
            throw StartError(description: "cannot read admin-token-file \(adminTokenFile): \(error.reason)")
        }
        logger.notice("issuing node tokens", metadata: ["count": "\(missing.count)"])
        let issued = try await HollowTokens.issue(nodes: missing, apiServer: apiServer, adminToken: admin)
        tokens.merge(issued) { a, _ in a }
        if let tokenFile {
            let text = names.compactMap { name in tokens[name].map { "\(name) \($0)\n" } }.joined()
            let fd = open(tokenFile, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
            if fd >= 0 {
                let bytes = Array(text.utf8)
                _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                close(fd)
            }
        }
        return tokens
    }
}

/// Issues node tokens through the api-server (`POST /v1/tokens`, admin).
public enum HollowTokens {
    /// A node token for each of `nodes`, 16 requests at a time; throws ``HollowFleetError`` when
    /// the api-server refuses or cannot be reached (after three tries each).
    public static func issue(nodes: [String], apiServer: String, adminToken: String) async throws -> [String: String] {
        let http = CurlHTTP.Client(name: "hollow-tokens", maxConnections: 16)
        defer { http.shutdown() }
        var base = apiServer
        while base.hasSuffix("/") { base.removeLast() }
        struct Issued: Decodable { var token: String }
        let url = base + "/v1/tokens"
        return try await withThrowingTaskGroup(of: (String, String).self) { group in
            var result: [String: String] = [:]
            var next = 0
            func add() {
                guard next < nodes.count else { return }
                let node = nodes[next]
                next += 1
                group.addTask {
                    let request = CurlHTTP.Request(
                        method: .post, url: url,
                        headers: [CurlHTTP.Header("Authorization", "Bearer \(adminToken)"), CurlHTTP.Header("Content-Type", "application/json")],
                        body: Data(#"{"role": "node", "node": "\#(node)"}"#.utf8), timeout: .seconds(30))
                    var failure = "no answer"
                    for attempt in 0..<3 {
                        switch await http.performResult(request) {
                        case .success(let response) where response.status == 201:
                            if let issued = try? GPUPlaneJSON.decode(Issued.self, from: response.body) { return (node, issued.token) }
                            failure = "the answer holds no token"
                        case .success(let response):
                            failure = "HTTP \(response.status): \(String(decoding: response.body.prefix(300), as: UTF8.self))"
                            if response.status < 500 { throw HollowFleetError("cannot issue a token for \(node): \(failure)") }
                        case .failure(let error):
                            failure = "\(error)"
                        }
                        try await Task.sleep(for: .milliseconds(500 * (attempt + 1)))
                    }
                    throw HollowFleetError("cannot issue a token for \(node): \(failure)")
                }
            }
            for _ in 0..<16 { add() }
            while let (node, token) = try await group.next() {
                result[node] = token
                add()
            }
            return result
        }
    }
}

/// The fleet as a service, logging its statistics now and then.
struct HollowFleetService: Service {
    let fleet: HollowFleet
    let statsInterval: Duration
    let logger: Logger

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await fleet.run() }
                group.addTask {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: statsInterval)
                        let s = fleet.statistics
                        logger.notice(
                            "hollow fleet",
                            metadata: ["registrations": "\(s.registrations)", "replicasRunning": "\(s.replicasRunning)",
                                       "modelServersReady": "\(s.modelServersReady)", "watchChanges": "\(s.watchChanges)",
                                       "reportFailures": "\(s.reportFailures)", "xids": "\(s.xids)"])
                    }
                }
                await group.waitForAll()
            }
        }
    }
}
