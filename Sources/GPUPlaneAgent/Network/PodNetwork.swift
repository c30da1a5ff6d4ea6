#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import GPUPlaneCore
import GPUPlaneSystem
import Logging

/// How a node runs its part of the pod network (see docs/architecture.md, "Pod network").
public struct PodNetworkSettings: Sendable, Hashable {
    /// This node's pod subnet (registered as ``NodeSpec/podSubnet``).
    public var subnet: IPv4CIDR
    /// The cluster's pod range, which holds every node's subnet: traffic between pods keeps its
    /// source address (no masquerade) and is filtered by application.
    public var clusterCIDR: IPv4CIDR
    /// The engine network the node's application pods join.
    public var networkName: String
    /// Its bridge interface.
    public var bridge: String
    /// The filter chain FORWARD jumps to first; the nat chain POSTROUTING jumps to first is
    /// this name with `-NAT`. `GPUPLANE-PODS` for the default bridge, `GPUPLANE-<BRIDGE>`
    /// otherwise, so two pod networks in one network namespace (two local clusters on one
    /// machine) keep their own rules.
    public var chain: String {
        bridge == Self.defaultBridge ? "GPUPLANE-PODS" : "GPUPLANE-" + bridge.uppercased()
    }
    /// The nat chain: pod-to-pod traffic is not masqueraded.
    public var natChain: String { chain + "-NAT" }
    /// The bridge interface unless told otherwise.
    public static let defaultBridge = "gpuplane0"
    /// How often the routes, names and rules are brought up to date with nothing to wake it.
    public var syncInterval: Duration

    /// Makes settings; `subnet` must lie inside `clusterCIDR`.
    public init(
        subnet: IPv4CIDR, clusterCIDR: IPv4CIDR, networkName: String = "gpuplane-pods", bridge: String = PodNetworkSettings.defaultBridge,
        syncInterval: Duration = .seconds(2)
    ) {
        self.subnet = subnet
        self.clusterCIDR = clusterCIDR
        self.networkName = networkName
        self.bridge = bridge
        self.syncInterval = syncInterval
    }
}

/// One application pod of this node on the pod network.
struct LocalPod: Sendable, Hashable {
    /// `<tenant>/<application>`.
    var group: String
    /// The pod's name.
    var pod: String
    /// The container's id.
    var containerID: String
    /// Its address.
    var ip: String
    /// The engine's file mounted as its `/etc/hosts`.
    var hostsPath: String?
}

/// Why the pod network cannot run.
public struct PodNetworkError: Error, Sendable, CustomStringConvertible {
    /// What failed, and how to fix it.
    public let message: String
    public var description: String { message }
}

/// The node's part of the pod network: one bridge network of the engine on the node's subnet,
/// routes to the other nodes' subnets via their addresses, iptables rules that let only the pods
/// of one application reach each other, and a hosts file per pod naming its application's pods
/// `<pod>.pod`.
///
/// ``prepare()`` once (IP forwarding, bridge netfilter, the network); then ``sync(view:)`` after
/// each answer of `GET /v1/nodes/{name}/podnetwork` and each reconcile pass (``setLocal(_:)``).
/// Everything it writes is derived whole from what it is told, so a sync repairs whatever was
/// changed or lost (a restarted agent, a container restarted by hand, a flushed table).
actor PodNetwork {
    /// The routing protocol number the agent's routes carry, so it finds its own.
    static let routeProtocol = "177"

    let settings: PodNetworkSettings
    let engine: ContainerEngine.Client
    let logger: Logger
    private var local: [LocalPod] = []
    private var view = PodNetworkView(routes: [], pods: [])
    private var applied: (rules: String, routes: [String: String])?
    private var endpoints: [String: (ip: String, hostsPath: String?)] = [:]

    init(settings: PodNetworkSettings, engine: ContainerEngine.Client, logger: Logger) {
        self.settings = settings
        self.engine = engine
        var logger = logger
        logger[metadataKey: "component"] = "pod-network"
        self.logger = logger
    }

    nonisolated var networkName: String { settings.networkName }

    /// Whether ``prepare()`` succeeded: the engine network exists, so pods can join it.
    private(set) var isPrepared = false

    /// Turns on IP forwarding and bridge netfilter (so pods on one bridge pass the filter too),
    /// and creates the engine network on the node's subnet unless it exists.
    /// - Throws: ``PodNetworkError`` when bridge netfilter is missing (`modprobe br_netfilter`),
    ///   when the network exists with another subnet, or the engine refuses.
    func prepare() async throws {
        try Self.writeSysctl("/proc/sys/net/ipv4/ip_forward")
        do {
            try Self.writeSysctl("/proc/sys/net/bridge/bridge-nf-call-iptables")
        } catch {
            throw PodNetworkError(
                message: "bridge netfilter is off (\(error)): pods on one node could reach each other across applications; load it with `modprobe br_netfilter`")
        }
        let subnet = settings.subnet.description
        do {
            if let existing = try await engine.network(settings.networkName) {
                guard existing.subnets.contains(subnet) else {
                    throw PodNetworkError(
                        message: "engine network \(settings.networkName) has subnet \(existing.subnets.joined(separator: ",")), not the node's pod subnet \(subnet); remove it (podman network rm) once no container uses it")
                }
            } else {
                try await engine.createNetwork(
                    name: settings.networkName, subnet: subnet, gateway: settings.subnet.address(at: 1), interface: settings.bridge)
                logger.notice("pod network created", metadata: ["network": "\(settings.networkName)", "subnet": "\(subnet)"])
            }
            isPrepared = true
        } catch let error as EngineError {
            throw PodNetworkError(message: "cannot create engine network \(settings.networkName) on \(subnet): \(error)")
        }
    }

    /// A running container's address on the pod network and its hosts file, inspected once per
    /// container; nil when it is not on the network.
    func endpoint(of containerID: String) async -> (ip: String, hostsPath: String?)? {
        if let known = endpoints[containerID] { return known }
        guard let details = try? await engine.inspect(containerID), let ip = details.networkAddresses[settings.networkName] else {
            return nil
        }
        let endpoint = (ip: ip, hostsPath: details.hostsPath)
        endpoints[containerID] = endpoint
        return endpoint
    }

    /// Takes the node's application pods from a reconcile pass and syncs.
    func setLocal(_ pods: [LocalPod]) async {
        let ids = Set(pods.map(\.containerID))
        endpoints = endpoints.filter { ids.contains($0.key) }
        local = pods
        await apply()
    }

    /// Takes the api-server's view and syncs.
    func sync(view: PodNetworkView) async {
        self.view = view
        await apply()
    }

    // MARK: Applying

    private func apply() async {
        let pods = Self.merged(view: view, local: local)
        for pod in local {
            guard let path = pod.hostsPath else { continue }
            let text = Self.hostsFile(for: pod, pods: pods)
            // Compared with the file itself: the engine writes its own when it (re)starts a container.
            guard (try? SystemFile.readText(path)) != text else { continue }
            do {
                try Self.rewriteInPlace(path, text)
            } catch {
                logger.warning("cannot write a pod's hosts file", metadata: ["path": "\(path)", "error": "\(error)"])
            }
        }
        let rules = Self.rules(settings: settings, local: local, pods: pods)
        let routes = Dictionary(
            view.routes.filter { IPv4CIDR($0.podSubnet).map { settings.clusterCIDR.overlaps($0) && !$0.overlaps(settings.subnet) } ?? false }
                .map { ($0.podSubnet, $0.address) }, uniquingKeysWith: { first, _ in first })
        if let applied, applied.rules == rules, applied.routes == routes { return }
        let outcome = await BlockingCall.run(name: "gpuplane-pod-network") { [settings] () -> Result<Void, PodNetworkError> in
            do {
                try Self.installRules(rules, settings: settings)
                try Self.installRoutes(routes)
                return .success(())
            } catch let error as PodNetworkError {
                return .failure(error)
            } catch {
                return .failure(PodNetworkError(message: "\(error)"))
            }
        }
        switch outcome {
        case .success:
            applied = (rules, routes)
            logger.info(
                "pod network synced",
                metadata: ["localPods": "\(local.count)", "knownPods": "\(pods.count)", "routes": "\(routes.count)",
                           "rules": "\(rules.split(separator: "\n").filter { $0.hasPrefix("-A") }.count)"])
        case .failure(let error):
            applied = nil
            logger.error("cannot sync the pod network; will retry", metadata: ["error": "\(error)"])
        }
    }

    /// The api-server's pods with this node's own (known at once, before their report returns
    /// through the api-server), one entry per address.
    static func merged(view: PodNetworkView, local: [LocalPod]) -> [(group: String, pod: String, ip: String)] {
        var seen = Set<String>()
        var all: [(group: String, pod: String, ip: String)] = []
        for pod in local where seen.insert(pod.ip).inserted { all.append((pod.group, pod.pod, pod.ip)) }
        for pod in view.pods where seen.insert(pod.ip).inserted { all.append((pod.group, pod.pod, pod.ip)) }
        return all.sorted { ($0.group, $0.pod, $0.ip) < ($1.group, $1.pod, $1.ip) }
    }

    /// A pod's `/etc/hosts`: localhost, its own name, and `<pod>.pod` for every pod of its
    /// application (one line per replica), nothing of any other application.
    static func hostsFile(for pod: LocalPod, pods: [(group: String, pod: String, ip: String)]) -> String {
        var text = "# Written by gpuplane's node-agent: the pods of this application, as <pod>.pod.\n"
        text += "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        text += "\(pod.ip)\t\(String(pod.containerID.prefix(12)))\n"
        for other in pods where other.group == pod.group {
            text += "\(other.ip)\t\(other.pod).pod\n"
        }
        return text
    }

    /// The iptables-restore input (`--noflush`: only the agent's two chains are replaced):
    /// replies pass; a pod of this node accepts new connections only from the pods of its own
    /// application; anything else from the cluster's pod range to this node's subnet is
    /// dropped; traffic between pod subnets is not masqueraded.
    static func rules(settings: PodNetworkSettings, local: [LocalPod], pods: [(group: String, pod: String, ip: String)]) -> String {
        let filterChain = settings.chain, natChain = settings.natChain
        var lines = ["*filter", ":\(filterChain) - [0:0]", "-A \(filterChain) -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"]
        for target in local.sorted(by: { $0.ip < $1.ip }) {
            for source in pods where source.group == target.group && source.ip != target.ip {
                lines.append("-A \(filterChain) -s \(source.ip)/32 -d \(target.ip)/32 -j ACCEPT")
            }
        }
        lines.append("-A \(filterChain) -s \(settings.clusterCIDR) -d \(settings.subnet) -j DROP")
        lines += ["COMMIT", "*nat", ":\(natChain) - [0:0]", "-A \(natChain) -s \(settings.clusterCIDR) -d \(settings.clusterCIDR) -j ACCEPT", "COMMIT", ""]
        return lines.joined(separator: "\n")
    }

    // MARK: The host

    static func writeSysctl(_ path: String) throws {
        if (try? SystemFile.readText(path))?.first == "1" { return }
        guard access(path, F_OK) == 0 else { throw PodNetworkError(message: "\(path) does not exist") }
        try rewriteInPlace(path, "1\n")
    }

    /// Writes `text` into the existing file at `path` (truncating it), never by rename: the
    /// file is bind-mounted into a container, which would keep seeing the old inode.
    static func rewriteInPlace(_ path: String, _ text: String) throws {
        let fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC)
        guard fd >= 0 else { throw PodNetworkError(message: "cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, bytes.count - done) }
            guard n > 0 else { throw PodNetworkError(message: "cannot write \(path): \(String(cString: strerror(errno)))") }
            done += n
        }
    }

    static var iptables: String { ["/usr/sbin/iptables", "/sbin/iptables", "/usr/bin/iptables"].first { access($0, X_OK) == 0 } ?? "iptables" }
    static var iptablesRestore: String {
        ["/usr/sbin/iptables-restore", "/sbin/iptables-restore", "/usr/bin/iptables-restore"].first { access($0, X_OK) == 0 } ?? "iptables-restore"
    }
    static var ipTool: String { ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].first { access($0, X_OK) == 0 } ?? "ip" }

    /// Replaces the two chains and makes sure FORWARD and POSTROUTING jump to them first
    /// (netavark appends its own jumps when a network is first used; ours must come before).
    static func installRules(_ rules: String, settings: PodNetworkSettings) throws {
        try run(iptablesRestore, ["--noflush", "--wait"], input: rules)
        for (table, builtin, chain) in [("filter", "FORWARD", settings.chain), ("nat", "POSTROUTING", settings.natChain)] {
            let listed = try run(iptables, ["--wait", "-t", table, "-S", builtin])
            let first = listed.split(separator: "\n").first { $0.hasPrefix("-A ") }
            guard first != "-A \(builtin) -j \(chain)" else { continue }
            while (try? run(iptables, ["--wait", "-t", table, "-D", builtin, "-j", chain])) != nil {}
            try run(iptables, ["--wait", "-t", table, "-I", builtin, "1", "-j", chain])
        }
    }

    /// Makes the agent's routes (protocol ``routeProtocol``) exactly `routes` (subnet → next hop).
    static func installRoutes(_ routes: [String: String]) throws {
        let listed = try run(ipTool, ["-4", "route", "show", "proto", routeProtocol])
        for line in listed.split(separator: "\n") {
            guard let subnet = line.split(separator: " ").first.map(String.init), routes[subnet] == nil else { continue }
            _ = try? run(ipTool, ["-4", "route", "del", subnet, "proto", routeProtocol])
        }
        for (subnet, via) in routes.sorted(by: { $0.key < $1.key }) {
            try run(ipTool, ["-4", "route", "replace", subnet, "via", via, "proto", routeProtocol])
        }
    }

    /// Removes the agent's rules, jumps and routes (for tests and uninstalling).
    static func removeAll(settings: PodNetworkSettings) {
        for (table, builtin, chain) in [("filter", "FORWARD", settings.chain), ("nat", "POSTROUTING", settings.natChain)] {
            while (try? run(iptables, ["--wait", "-t", table, "-D", builtin, "-j", chain])) != nil {}
            _ = try? run(iptables, ["--wait", "-t", table, "-F", chain])
            _ = try? run(iptables, ["--wait", "-t", table, "-X", chain])
        }
        _ = try? installRoutes([:])
    }

    @discardableResult
    static func run(_ executable: String, _ arguments: [String], input: String? = nil) throws -> String {
        try HostCommand.run(executable, arguments, input: input)
    }
}
