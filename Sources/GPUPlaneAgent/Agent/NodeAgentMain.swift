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
import GPUPlaneListener
import GPUPlaneService
import Logging
import ServiceLifecycle
import GPUPlaneSystem

/// The `gpuplane-node-agent` process: configuration, logging, the agent, the systemd watchdog.
public enum NodeAgentMain {
    /// The default configuration file.
    public static let defaultConfigFile = "/etc/gpuplane/node-agent.conf"
    /// The listener's default port.
    public static let defaultPort = 9447

    /// The configuration keys (file `key = value`, env `GPUPLANE_<KEY>`, flags `--key`).
    public static let keys: [ConfigurationKey] = [
        ConfigurationKey(
            "api-server", .string, default: "http://127.0.0.1:8080",
            help: "the api-server's base URL, or several api-servers' separated by commas (the agent calls the one its node name picks, moves to the next when it stops answering, and goes back when it answers again)"),
        ConfigurationKey("node-token-file", .string, required: true, help: "file holding this node's token"),
        ConfigurationKey("api-server-ca-file", .string, help: "PEM CA certificate to verify an https:// api-server with (default: the system's CAs)"),
        ConfigurationKey("node-name", .string, help: "this node's name (a DNS label); default: the host name"),
        ConfigurationKey("gpu-mode", .string, default: "dedicated", help: "the gpu-mode label: dedicated, large, shared or mixed (whole GPUs and Mode 3 shares on one node)"),
        ConfigurationKey("address", .string, help: "the address the gateway reaches this node's containers on"),
        ConfigurationKey("engine-socket", .string, default: "/run/podman/podman.sock", help: "the container engine's API socket (podman or docker)"),
        ConfigurationKey("cdi-gpu-kind", .string, default: "nvidia.com/gpu", help: "the CDI kind of GPUs on podman"),
        ConfigurationKey("nvml-library", .string, default: NVMLLibrary.defaultPath, help: "the NVML library to dlopen"),
        ConfigurationKey("gateway-url", .string, help: "the inference gateway's base URL for NXL_INFERENCE_URL; default: api-server"),
        ConfigurationKey("heartbeat-interval", .duration, default: "1s", help: "how often the heartbeat lease is renewed"),
        ConfigurationKey("resync-interval", .duration, default: "10s", help: "the longest time between reconcile passes"),
        ConfigurationKey("stop-grace-period", .duration, default: "10s", help: "SIGTERM to SIGKILL when a container must stop"),
        ConfigurationKey("restart-backoff", .duration, default: "1s", help: "first pause before restarting a crashed container (doubles)"),
        ConfigurationKey("restart-backoff-max", .duration, default: "60s", help: "cap of the restart pause"),
        ConfigurationKey("image-pull-backoff", .duration, default: "10s", help: "pause after a failed image pull (doubles)"),
        ConfigurationKey("image-pull-backoff-max", .duration, default: "5m", help: "cap of the image pull pause"),
        ConfigurationKey("image-pull-timeout", .duration, default: "1h", help: "deadline of one image pull"),
        ConfigurationKey("quiet-time", .duration, default: "5m", help: "how long an unhealthy GPU must stay clean to return to service"),
        ConfigurationKey("model-server-ports", .string, default: "20000-20999", help: "host ports model servers are published on (FIRST-LAST)"),
        ConfigurationKey("published-ports-from", .string, help: "who may connect to the published ports besides this host: the api-servers' addresses, CIDRs or host names (comma-separated), or 'any'; default: the hosts of the api-server URLs"),
        ConfigurationKey("pod-subnet", .string, help: "this node's pod subnet (e.g. 10.251.3.0/24): runs the pod network (<pod>.pod names, pod traffic across nodes); needs address"),
        ConfigurationKey("pod-cidr", .string, default: "10.251.0.0/16", help: "the cluster's pod range holding every node's pod-subnet"),
        ConfigurationKey(
            "pod-bridge", .string, default: PodNetworkSettings.defaultBridge,
            help: "the pod network's bridge interface; another name also gives its own iptables chains (GPUPLANE-<NAME>), for a second pod network on one host"),
        ConfigurationKey("allocatable-cpu", .string, help: "CPU this node offers replicas (2, 1.5, 500m); default: the host's CPUs minus system-reserved-cpu (a GPU host: at least its machine type's CPUs per GPU)"),
        ConfigurationKey("allocatable-memory", .string, help: "memory this node offers replicas (4096 MB, 512Mi, 16Gi); default: the host's memory minus system-reserved-memory (a GPU host: at least its machine type's RAM per GPU)"),
        ConfigurationKey("system-reserved-cpu", .string, default: "100m", help: "CPU kept for the host when allocatable-cpu is read from it"),
        ConfigurationKey("system-reserved-memory", .string, default: "256Mi", help: "memory kept for the host when allocatable-memory is read from it"),
        ConfigurationKey("request-timeout", .duration, default: "5s", help: "deadline of one api-server call"),
        returnAfterKey,
    ] + weightsKeys + DaemonListener.keys(defaultAddress: "0.0.0.0", defaultPort: defaultPort, what: "the agent's listener (container logs for the api-server, /metrics)") + [
        ConfigurationKey("log-level", .string, default: "info", help: "trace, debug, info, notice, warning, error"),
        ConfigurationKey("log-destination", .string, default: "automatic", help: "automatic, journald or stderr"),
    ]

    /// Why the agent cannot start.
    public struct StartError: Error, CustomStringConvertible {
        /// Words.
        public let description: String
    }

    /// Builds the agent's configuration and clients from loaded configuration.
    public static func makeAgent(
        _ config: Configuration, notifier: SystemdNotifier, readiness: ReadinessTracker?, logger: Logger
    ) throws -> NodeAgent {
        guard let tokenFile = try config.string("node-token-file") else {
            throw StartError(description: "node-token-file is required")
        }
        let token: String
        do {
            token = try SystemFile.readText(tokenFile).trimmingWhitespace()
        } catch {
            throw StartError(description: "cannot read node-token-file \(tokenFile): \(error.reason)")
        }
        guard !token.isEmpty else { throw StartError(description: "node-token-file \(tokenFile) is empty") }
        let nodeName = try config.string("node-name") ?? ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? ""
        guard Syntax.isDNSLabel(nodeName) else {
            throw StartError(description: "node-name '\(nodeName)' is not a DNS label; set node-name")
        }
        let mode = try config.string("gpu-mode") ?? "dedicated"
        guard ["dedicated", "large", "shared", "mixed"].contains(mode) else {
            throw StartError(description: "gpu-mode must be dedicated, large, shared or mixed, not '\(mode)'")
        }
        let apiServers = try Self.apiServerURLs(config)
        let apiServer = apiServers[0]
        let caFile = try config.string("api-server-ca-file")
        if let caFile {
            if let plain = apiServers.first(where: { !$0.hasPrefix("https://") }) {
                throw StartError(description: "api-server-ca-file is set but api-server is not an https:// URL ('\(plain)')")
            }
            guard access(caFile, R_OK) == 0 else { throw StartError(description: "cannot read api-server-ca-file \(caFile)") }
        }
        for url in apiServers where url.hasPrefix("http://") && !NodeAgentMain.isLoopback(url) {
            logger.warning(
                "api-server is plain HTTP on a non-loopback address: the node token crosses the network in clear text; serve the api-server over HTTPS and set api-server-ca-file",
                metadata: ["api-server": "\(url)"])
        }
        // One curl thread for both peers: the api-server over TCP and the engine's unix socket.
        // The process owns it until exit.
        let http = CurlHTTP.Client(name: "agent-curl", maxConnections: 12)
        // The node's own api-server first (a fleet spreads over the list), back to it when
        // it answers again after a move; 0: stay wherever it moved.
        let ownFirst = NodeAPI.Configuration.ownFirst(apiServers, node: nodeName)
        let api = NodeAPI.Client(
            NodeAPI.Configuration(
                baseURL: ownFirst[0], token: token, requestTimeout: try config.duration("request-timeout") ?? .seconds(5),
                tls: caFile.map { CurlHTTP.TLS(caFile: $0) }, logger: logger, otherURLs: Array(ownFirst.dropFirst()),
                returnAfter: try returnAfter(config)),
            http: http)
        let engine = ContainerEngine.Client(
            ContainerEngine.Configuration(
                socketPath: try config.string("engine-socket") ?? "/run/podman/podman.sock",
                cdiGPUKind: try config.string("cdi-gpu-kind") ?? "nvidia.com/gpu", logger: logger),
            http: http)
        let gateway = try config.string("gateway-url") ?? apiServer
        if NodeAgentMain.isLoopback(gateway) {
            logger.warning(
                "gateway-url is a loopback address: pods on the engine's bridge network cannot reach NXL_INFERENCE_URL there; set gateway-url to an address containers reach",
                metadata: ["gateway": "\(gateway)"])
        }
        var configuration = NodeAgentConfiguration(
            nodeName: nodeName, gpuMode: mode, address: try config.string("address"),
            gatewayBaseURL: gateway,
            nvmlLibraryPath: try config.string("nvml-library"),
            heartbeatInterval: try config.duration("heartbeat-interval") ?? .seconds(1),
            resyncInterval: try config.duration("resync-interval") ?? .seconds(10),
            stopGracePeriod: try config.duration("stop-grace-period") ?? .seconds(10),
            restartBackoff: try config.duration("restart-backoff") ?? .seconds(1),
            restartBackoffMax: try config.duration("restart-backoff-max") ?? .seconds(60),
            healthPolicy: HealthPolicy(quietPeriod: try config.duration("quiet-time") ?? .seconds(300)),
            modelServerPorts: try portRange(try config.string("model-server-ports") ?? "20000-20999"),
            logger: logger)
        configuration.imagePullBackoff = try config.duration("image-pull-backoff") ?? .seconds(10)
        configuration.imagePullBackoffMax = try config.duration("image-pull-backoff-max") ?? .seconds(300)
        configuration.imagePullTimeout = try config.duration("image-pull-timeout") ?? .seconds(3600)
        configuration.podNetwork = try podNetworkSettings(config, address: configuration.address)
        configuration.agentURL = try agentURL(config, address: configuration.address)
        configuration.publishedPortSources = try publishedPortSources(config, address: configuration.address)
        try applyAllocatable(config, to: &configuration)
        configuration.weightsCache = try weightsCacheSettings(config)
        return NodeAgent(configuration: configuration, api: api, engine: engine, notifier: notifier, readiness: readiness)
    }

    /// The listener's URL as the api-server reaches it: `address` (else `listen` when it is not
    /// the wildcard, else the host name) and `port`; https with `tls-cert-file`. Nil with port 0.
    static func agentURL(_ config: Configuration, address: String?) throws -> String? {
        let port = try config.int("port") ?? defaultPort
        guard port != 0 else { return nil }
        guard (1...65535).contains(port) else { throw StartError(description: "port must be 0 (no listener) or 1 to 65535, not \(port)") }
        let listen = try config.string("listen") ?? "0.0.0.0"
        let host = address ?? (["0.0.0.0", "::", ""].contains(listen) ? ProcessInfo.processInfo.hostName : listen)
        let scheme = try config.string("tls-cert-file") == nil ? "http" : "https"
        return "\(scheme)://\(host.contains(":") ? "[\(host)]" : host):\(port)"
    }

    /// `published-ports-from`, by default the api-server URL's host; nil without `address` or
    /// with a loopback one (the ports are then published on loopback only, out of other
    /// hosts' reach).
    static func publishedPortSources(_ config: Configuration, address: String?) throws -> PublishedPortSources? {
        guard let address, !address.isEmpty, !address.hasPrefix("127."), address != "::1", address != "localhost" else { return nil }
        if let text = try config.string("published-ports-from") {
            do {
                return try PublishedPortSources.parse(text)
            } catch {
                throw StartError(description: error.message)
            }
        }
        var hosts: [String] = []
        for url in try apiServerURLs(config) {
            guard let host = URLComponents(string: url)?.host, !host.isEmpty else {
                throw StartError(description: "published-ports-from: the api-server URL '\(url)' names no host; set published-ports-from to the api-servers' addresses")
            }
            hosts.append(host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host)
        }
        return .sources(hosts)
    }

    /// `api-server-return-after`: how long a node away from its own api-server waits before
    /// asking whether it answers again (``NodeAPI/Configuration/returnAfter``); the
    /// hollow-nodes simulator takes it too.
    static let returnAfterKey = ConfigurationKey(
        "api-server-return-after", .duration, default: "30s",
        help: "with several api-servers: how long after moving off its own api-server (the one the node name picks) the agent asks its /healthz, to go back when it answers; 0: stay")

    /// ``returnAfterKey``'s value; nil for 0 (stay wherever it moved).
    static func returnAfter(_ config: Configuration) throws -> Duration? {
        let wait = try config.duration(returnAfterKey.name) ?? .seconds(30)
        return wait > .zero ? wait : nil
    }

    /// `api-server`: one URL or several separated by commas, in the order the agent tries them.
    static func apiServerURLs(_ config: Configuration) throws -> [String] {
        let text = try config.string("api-server") ?? "http://127.0.0.1:8080"
        let urls = text.split(separator: ",").map { String($0.filter { !$0.isWhitespace }) }.filter { !$0.isEmpty }
        guard !urls.isEmpty else { throw StartError(description: "api-server names no URL") }
        for url in urls where !(url.hasPrefix("http://") || url.hasPrefix("https://")) {
            throw StartError(description: "api-server must be http:// or https:// URLs separated by commas, not '\(url)'")
        }
        return urls
    }

    /// `allocatable-cpu`, `allocatable-memory`, `system-reserved-cpu` and `system-reserved-memory`.
    static func applyAllocatable(_ config: Configuration, to configuration: inout NodeAgentConfiguration) throws {
        func cpu(_ key: String) throws -> Int? {
            guard let text = try config.string(key) else { return nil }
            guard let value = ResourceQuantity.cpuMilli(text) else {
                throw StartError(description: "\(key) must be a number of CPUs (2, 1.5) or millicores (500m), not '\(text)'")
            }
            return value
        }
        func memory(_ key: String) throws -> Int? {
            guard let text = try config.string(key) else { return nil }
            guard let value = ResourceQuantity.memoryMB(text) else {
                throw StartError(description: "\(key) must be MB (4096) or a size (512Mi, 16Gi, 1Ti), not '\(text)'")
            }
            return value
        }
        configuration.allocatableCPUMilli = try cpu("allocatable-cpu")
        configuration.allocatableMemoryMB = try memory("allocatable-memory")
        configuration.systemReserved = ComputeResources(
            cpuMilli: try cpu("system-reserved-cpu") ?? 100, memoryMB: try memory("system-reserved-memory") ?? 256)
    }

    /// The pod network's settings from `pod-subnet` and `pod-cidr`; nil without `pod-subnet`.
    static func podNetworkSettings(_ config: Configuration, address: String?) throws -> PodNetworkSettings? {
        guard let text = try config.string("pod-subnet") else { return nil }
        let rangeText = try config.string("pod-cidr") ?? "10.251.0.0/16"
        guard let subnet = IPv4CIDR(text), (16...28).contains(subnet.prefix) else {
            throw StartError(description: "pod-subnet must be an IPv4 subnet of /16 to /28 with no host bits (e.g. 10.251.3.0/24), not '\(text)'")
        }
        guard let range = IPv4CIDR(rangeText), range.prefix <= subnet.prefix, range.contains(subnet.address(at: 0)) else {
            throw StartError(description: "pod-cidr must be an IPv4 subnet holding pod-subnet \(text), not '\(rangeText)'")
        }
        guard address != nil else {
            throw StartError(description: "pod-subnet needs address: the other nodes route this node's pods to it")
        }
        let bridge = try config.string("pod-bridge") ?? PodNetworkSettings.defaultBridge
        guard (1...15).contains(bridge.utf8.count), bridge.utf8.allSatisfy({ $0 == 0x2D || (0x30...0x39).contains($0) || (0x61...0x7A).contains($0) }) else {
            throw StartError(description: "pod-bridge must be an interface name of 1 to 15 lowercase letters, digits and '-', not '\(bridge)'")
        }
        return PodNetworkSettings(subnet: subnet, clusterCIDR: range, bridge: bridge)
    }

    /// Whether `url`'s host is a loopback name or address (`localhost`, `127.x.x.x`, `::1`).
    public static func isLoopback(_ url: String) -> Bool {
        guard let schemeEnd = url.firstRange(of: "://") else { return false }
        var host = url[schemeEnd.upperBound...].prefix { $0 != "/" }
        if let at = host.lastIndex(of: "@") { host = host[host.index(after: at)...] }
        if host.hasPrefix("[") {
            host = host.dropFirst().prefix { $0 != "]" }
        } else if let colon = host.lastIndex(of: ":") {
            host = host[..<colon]
        }
        let name = host.lowercased()
        return name == "localhost" || name.hasSuffix(".localhost") || name.hasPrefix("127.") || name == "::1"
    }

    /// Parses `FIRST-LAST` (or one port) into a range of valid TCP ports.
    public static func portRange(_ text: String) throws -> ClosedRange<Int> {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false).map { Int($0.trimmingWhitespace()) }
        guard (1...2).contains(parts.count), let first = parts.first ?? nil, let last = parts.last ?? nil,
            (1...65535).contains(first), (first...65535).contains(last)
        else {
            throw StartError(description: "model-server-ports must be FIRST-LAST with 1 <= FIRST <= LAST <= 65535, not '\(text)'")
        }
        return first...last
    }

    /// One malloc arena for all threads: the agent allocates little, and glibc's default of an
    /// arena per thread (up to 8 per core) costs resident pages for nothing. Call from `main`
    /// before the first `await`: a thread that allocated before it (the first hop to the
    /// concurrency pool) keeps the arena it made.
    public static func limitMallocArenas() {
        SystemThread.limitMallocArenas(1)
    }

    /// Runs the agent until SIGTERM; returns the exit status.
    public static func run() async -> Int32 {
        if CommandLine.arguments.dropFirst().first == "gpus" {
            return await gpusCommand(Array(CommandLine.arguments.dropFirst(2)))
        }
        do {
            let config = try Configuration.load(keys: keys, defaultConfigFile: defaultConfigFile)
            let level = Logger.Level(rawValue: try config.string("log-level") ?? "info") ?? .info
            let destination = GPUPlaneLogging.Destination(rawValue: try config.string("log-destination") ?? "automatic") ?? .automatic
            GPUPlaneLogging.bootstrap(identifier: "gpuplane-node-agent", level: level, destination: destination)
            let logger = Logger(label: "gpuplane.agent")
            let notifier = SystemdNotifier()
            let readiness = ReadinessTracker(components: [NodeAgent.readinessComponent])
            let port = try config.int("port") ?? defaultPort
            if port != 0 {
                // Before the agent is made: metrics created earlier (the weights cache's, at
                // start) would stay bound to the no-op backend and never be served.
                MetricsExporter.bootstrap()
                AgentMetrics.register()
                WeightsMetrics.register()
            }
            let agent = try makeAgent(config, notifier: notifier, readiness: readiness, logger: logger)
            let watchdog = WatchdogService(notifier: notifier, logger: logger) { agent.isHealthy }
            var services: [any Service] = [agent, watchdog]
            if port != 0 {
                let tls: ServerTLS?
                do { tls = try ServerTLS.load(config) } catch { throw StartError(description: "\(error)") }
                services.append(
                    DaemonListener(
                        host: try config.string("listen") ?? "0.0.0.0", port: port, tls: tls,
                        routes: [{ await agent.listenerRoute($0) }], logger: logger))
                if tls == nil, let url = agent.configuration.agentURL, !isLoopback(url) {
                    logger.warning(
                        "the agent's listener is plain HTTP on a non-loopback address: container logs cross the network in clear text; set tls-cert-file and tls-key-file (and agent-ca-file on the api-servers)",
                        metadata: ["url": "\(url)"])
                }
            }
            let daemon = Daemon(
                services: services, readiness: readiness, notifier: notifier, readyStatus: "registered",
                logger: logger)
            try await daemon.run()
            return 0
        } catch {
            let line = Array("gpuplane-node-agent: \(error)\n".utf8)
            _ = line.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
            return 1
        }
    }
}
