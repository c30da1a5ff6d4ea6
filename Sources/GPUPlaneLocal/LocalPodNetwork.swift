import Foundation

/// The pod network a local cluster's node runs in this machine's network namespace: a
/// 10.252.`n`.0/24 with its own bridge (`gpuplane-l<n>`) and so its own iptables chains
/// (`GPUPLANE-GPUPLANE-L<n>`), claimed with a lock file so clusters started at once (the suite
/// runs several) never share one, and removed again by ``release()``.
///
/// 10.252/16 keeps clear of 10.251/16, the range the multi-host tests (``NetnsCluster``) route
/// between their namespaces: this namespace's rules never match their traffic.
final class LocalPodNetwork: @unchecked Sendable {
    /// The node's pod subnet (also the agent's `pod-cidr`: the cluster has one pod network).
    let subnet: String
    /// The bridge interface.
    let bridge: String
    private let lock: Int32
    private let lockPath: String

    private init(octet: Int, lock: Int32, lockPath: String) {
        subnet = "10.252.\(octet).0/24"
        bridge = "gpuplane-l\(octet)"
        self.lock = lock
        self.lockPath = lockPath
    }

    /// The agent's flags for it.
    var agentArguments: [String] {
        ["--pod-subnet", subnet, "--pod-cidr", subnet, "--pod-bridge", bridge, "--address", "127.0.0.1"]
    }

    /// Claims the first 10.252.`n`.0/24 no other local cluster holds and no interface of this
    /// machine uses.
    static func claim() throws -> LocalPodNetwork {
        let used = (try? String(contentsOfFile: "/proc/net/fib_trie", encoding: .utf8)) ?? ""
        for octet in 1..<250 where !used.contains("10.252.\(octet).") {
            let path = NSTemporaryDirectory() + "gpuplane-local-podnet-\(octet).lock"
            let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            guard fd >= 0 else { continue }
            // Held until release() or this process's end, whatever way it ends.
            if flock(fd, LOCK_EX | LOCK_NB) == 0 { return LocalPodNetwork(octet: octet, lock: fd, lockPath: path) }
            close(fd)
        }
        throw LocalCluster.Failure(description: "no free 10.252.x.0/24 for the local cluster's pod network")
    }

    /// Removes the agent's chains and their jumps (an agent leaves them when it stops, like its
    /// containers) and the bridge, then gives the subnet back.
    func release() {
        let chain = "GPUPLANE-" + bridge.uppercased()
        for (table, builtin, name) in [("filter", "FORWARD", chain), ("nat", "POSTROUTING", chain + "-NAT")] {
            while Self.run("iptables", ["--wait", "-t", table, "-D", builtin, "-j", name]) {}
            _ = Self.run("iptables", ["--wait", "-t", table, "-F", name])
            _ = Self.run("iptables", ["--wait", "-t", table, "-X", name])
        }
        _ = Self.run("ip", ["link", "delete", bridge])
        flock(lock, LOCK_UN)
        close(lock)
    }

    /// Runs a tool quietly; true when it succeeded.
    private static func run(_ tool: String, _ arguments: [String]) -> Bool {
        let path = ["/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"].map { $0 + tool }.first { access($0, X_OK) == 0 } ?? tool
        return (try? Command.run(path, arguments).status) == 0
    }
}
