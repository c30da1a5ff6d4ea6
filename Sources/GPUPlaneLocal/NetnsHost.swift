import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A LAN of test "hosts" on one machine: a bridge in the root network namespace with an
/// address of a free 10.250.x.0/24 (``gatewayAddress``, where daemons of the root namespace,
/// such as the api-server, listen), and ``NetnsHost``s plugged into it, each a network namespace
/// with its own address, routes, iptables and podman.
///
/// Everything it makes is named after a tag unique to the LAN (`gplb<tag>`, `gpl-<tag>-<n>`) and
/// listed in `/tmp/gpuplane-netns-<tag>/`, with the owning process's pid: ``shutdown()``, the
/// process's exit, or the next LAN made after a crash removes the namespaces (and with them
/// every route, rule and interface made inside) and the bridge.
public final class NetnsLAN: @unchecked Sendable {
    /// The tag in every name.
    public let tag: String
    /// The bridge.
    public let bridge: String
    /// The LAN's third octet: 10.250.`x`.0/24.
    public let octet: Int
    /// The bridge's address: the root namespace on the LAN.
    public var gatewayAddress: String { "10.250.\(octet).1" }
    /// The folder listing what was made.
    public let directory: URL
    private let lock = NSLock()
    private var hosts: [NetnsHost] = []
    private var done = false

    /// Whether namespaces can be made here (root, `ip` and `nsenter`).
    public static var isAvailable: Bool {
        getuid() == 0 && TestEnvironment.hasExecutable(ip) && TestEnvironment.hasExecutable(nsenter)
    }

    static let ip = "/usr/sbin/ip"
    static let nsenter = "/usr/bin/nsenter"

    private init(tag: String, octet: Int, directory: URL) {
        self.tag = tag
        self.bridge = "gplb\(tag)"
        self.octet = octet
        self.directory = directory
    }

    /// Makes the bridge on a 10.250.x.0/24 that no interface of this machine uses.
    public static func create() throws -> NetnsLAN {
        sweepStale()
        let tag = String(UUID().uuidString.lowercased().filter { $0.isHexDigit }.prefix(6))
        let used = try PodmanFixture.run(ip, ["-4", "-o", "addr", "show"])
        guard let octet = (0..<200).map({ (Int(getpid()) + $0) % 200 + 20 }).first(where: { !used.contains("10.250.\($0).") }) else {
            throw PodmanFixtureError(message: "no free 10.250.x.0/24 for a test LAN")
        }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("gpuplane-netns-\(tag)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try "\(getpid())\n".write(to: directory.appendingPathComponent("owner"), atomically: true, encoding: .utf8)
        let lan = NetnsLAN(tag: tag, octet: octet, directory: directory)
        register(lan)
        do {
            try PodmanFixture.run(ip, ["link", "add", lan.bridge, "type", "bridge"])
            try PodmanFixture.run(ip, ["addr", "add", "\(lan.gatewayAddress)/24", "dev", lan.bridge])
            try PodmanFixture.run(ip, ["link", "set", lan.bridge, "up"])
        } catch {
            lan.shutdown()
            throw error
        }
        return lan
    }

    /// Plugs a new host into the LAN: namespace `gpl-<tag>-<index>` with `eth0` at
    /// 10.250.x.(index+1) and loopback up, and its own podman service running inside it.
    public func addHost() async throws -> NetnsHost {
        let index = lock.withLock { hosts.count + 1 }
        let name = "gpl-\(tag)-\(index)"
        let veth = "gv\(tag)\(index)"
        let address = "10.250.\(octet).\(index + 1)"
        try "\(name)\n".write(to: directory.appendingPathComponent("host-\(index)"), atomically: true, encoding: .utf8)
        try PodmanFixture.run(Self.ip, ["netns", "add", name])
        try PodmanFixture.run(Self.ip, ["link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name])
        try PodmanFixture.run(Self.ip, ["link", "set", veth, "master", bridge, "up"])
        try PodmanFixture.run(Self.ip, ["-n", name, "addr", "add", "\(address)/24", "dev", "eth0"])
        try PodmanFixture.run(Self.ip, ["-n", name, "link", "set", "eth0", "up"])
        try PodmanFixture.run(Self.ip, ["-n", name, "link", "set", "lo", "up"])
        let podman = try await PodmanFixture.start(networkNamespace: name)
        let host = NetnsHost(name: name, address: address, podman: podman)
        lock.withLock { hosts.append(host) }
        return host
    }

    /// Records a daemon started for this LAN (its pid, and a word of its command line), so that
    /// after a crash of this process the next LAN made kills it, after checking that
    /// `/proc/<pid>/cmdline` still holds the word (the pid may have been reused).
    public func adopt(pid: Int32, commandLineHolds word: String) {
        try? word.write(to: directory.appendingPathComponent("daemon-\(pid)"), atomically: true, encoding: .utf8)
    }

    /// Runs `arguments` (a command line) inside `host`'s namespace and returns its output.
    @discardableResult
    public func run(in host: NetnsHost, _ arguments: [String]) throws -> String {
        try PodmanFixture.run(Self.nsenter, ["--net=/var/run/netns/\(host.name)"] + arguments)
    }

    /// Stops every host's podman and removes the namespaces and the bridge.
    public func shutdown() {
        let (first, all) = lock.withLock { () -> (Bool, [NetnsHost]) in
            defer { done = true }
            return (!done, hosts)
        }
        guard first else { return }
        for host in all { host.podman.shutdown() }
        Self.remove(directory: directory, bridge: bridge)
    }

    deinit { shutdown() }

    /// Deletes the namespaces a LAN folder lists, the bridge, and the folder.
    static func remove(directory: URL, bridge: String) {
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? [] where entry.hasPrefix("daemon-") {
            guard let pid = Int32(entry.dropFirst("daemon-".count)),
                let word = try? String(contentsOf: directory.appendingPathComponent(entry), encoding: .utf8), !word.isEmpty,
                let commandLine = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline")),
                String(decoding: commandLine, as: UTF8.self).contains(word)
            else { continue }
            kill(pid, SIGKILL)
        }
        // The daemons' folder (their word), with their logs, goes too.
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? [] where entry.hasPrefix("daemon-") {
            guard let word = try? String(contentsOf: directory.appendingPathComponent(entry), encoding: .utf8),
                URL(fileURLWithPath: word).lastPathComponent.hasPrefix("gpuplane-netns-cluster-")
            else { continue }
            try? FileManager.default.removeItem(atPath: word)
        }
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? [] where entry.hasPrefix("host-") {
            guard let name = try? String(contentsOf: directory.appendingPathComponent(entry), encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines), name.hasPrefix("gpl-")
            else { continue }
            _ = try? PodmanFixture.run(ip, ["netns", "del", name])
        }
        _ = try? PodmanFixture.run(ip, ["link", "del", bridge])
        try? FileManager.default.removeItem(at: directory)
    }

    /// Removes what LANs of dead processes left (their podman fixtures sweep themselves).
    static func sweepStale() {
        let temporary = FileManager.default.temporaryDirectory
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: temporary.path)) ?? [] where entry.hasPrefix("gpuplane-netns-") {
            let directory = temporary.appendingPathComponent(entry)
            guard let text = try? String(contentsOf: directory.appendingPathComponent("owner"), encoding: .utf8),
                let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), !isAlive(pid)
            else { continue }
            FileHandle.standardError.write(Data("NetnsLAN: removing \(entry), left by process \(pid)\n".utf8))
            PodmanFixture.sweepStaleFixtures()
            remove(directory: directory, bridge: "gplb" + entry.dropFirst("gpuplane-netns-".count))
        }
    }

    /// Whether `pid` runs: it exists and is no zombie (a killed process whose parent died stays
    /// one until init reaps it, which a container's init may never do).
    static func isAlive(_ pid: Int32) -> Bool {
        if kill(pid, 0) != 0 && errno == ESRCH { return false }
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return true }
        return stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first != "Z"
    }

    private static let registry = NSLock()
    nonisolated(unsafe) private static var live: [NetnsLAN] = []
    nonisolated(unsafe) private static var installed = false

    private static func register(_ lan: NetnsLAN) {
        registry.withLock {
            live.append(lan)
            guard !installed else { return }
            installed = true
            atexit {
                for lan in NetnsLAN.registry.withLock({ NetnsLAN.live }) { lan.shutdownAtExit() }
            }
        }
    }

    /// At exit, by the shell: the podman fixtures' own exit handlers remove their storage.
    private func shutdownAtExit() {
        let first = lock.withLock { () -> Bool in
            defer { done = true }
            return !done
        }
        guard first else { return }
        for host in lock.withLock({ hosts }) { host.podman.shutdown() }
        _ = system(
            "for f in '\(directory.path)'/host-*; do ip netns del \"$(cat \"$f\")\" 2>/dev/null; done; "
                + "ip link del '\(bridge)' 2>/dev/null; rm -rf '\(directory.path)'")
    }
}

/// One test host of a ``NetnsLAN``: a network namespace with its own address and podman.
public final class NetnsHost: @unchecked Sendable {
    /// The namespace's name (under `/var/run/netns`).
    public let name: String
    /// Its address on the LAN.
    public let address: String
    /// Its podman service, running in the namespace.
    public let podman: PodmanFixture

    init(name: String, address: String, podman: PodmanFixture) {
        self.name = name
        self.address = address
        self.podman = podman
    }
}
