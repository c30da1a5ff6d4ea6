#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import GPUPlaneCore

/// Who may open connections to the ports a node publishes (its model servers, deployment
/// instances and path-ingress pods, all in `model-server-ports`).
///
/// Those ports answer without the inference key or the application's URL: the api-server's
/// gateway and ingress check who calls, then connect to the port. Anyone else who reaches the
/// node's address (another tenant's pod on any node, any host of the network) would skip those
/// checks, so the node-agent admits new connections to its published ports only from the
/// sources named here, and from the host itself.
public enum PublishedPortSources: Sendable, Equatable {
    /// No filter (`published-ports-from: any`): the operator filters in front of the nodes.
    case any
    /// Addresses, CIDRs (`10.0.4.0/24`) or host names resolved at each check (the api-servers'
    /// addresses; by default the host of the agent's `api-server` URL).
    case sources([String])

    /// Parses `published-ports-from`: `any`, or a comma-separated list.
    /// - Throws: ``PodNetworkError`` naming the option for an empty list.
    public static func parse(_ text: String) throws(PodNetworkError) -> PublishedPortSources {
        func trim(_ s: Substring) -> String { String(s.drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed()) }
        if trim(Substring(text)) == "any" { return .any }
        let items = text.split(separator: ",").map(trim).filter { !$0.isEmpty }
        guard !items.isEmpty else {
            throw PodNetworkError(message: "published-ports-from must be 'any' or a comma-separated list of the api-servers' addresses, CIDRs or host names")
        }
        for item in items where item.contains("/") {
            guard PublishedPortGuard.cidr(item) != nil else {
                throw PodNetworkError(message: "published-ports-from: '\(item)' is not an IPv4 CIDR such as 10.0.4.0/24")
            }
        }
        return .sources(items)
    }
}

/// The iptables rules behind ``PublishedPortSources``: a chain of the `mangle` table, jumped to
/// from `PREROUTING` for TCP to the published range, so it sees each packet before the
/// engine's port mapping rewrites its destination (netavark's DNAT in `nat PREROUTING`).
///
/// ```
/// -A GPUPLANE-PUB-20000-20999 -i lo -j RETURN
/// -A GPUPLANE-PUB-20000-20999 -m addrtype --src-type LOCAL -j RETURN
/// -A GPUPLANE-PUB-20000-20999 -s 10.250.21.1/32 -j RETURN
/// -A GPUPLANE-PUB-20000-20999 -m addrtype --dst-type LOCAL -m conntrack --ctstate NEW -j DROP
/// ```
///
/// Only new connections addressed to the node itself are dropped: replies to the host's own
/// outgoing connections and traffic routed through the node pass. The host's own processes
/// (probes, a co-located api-server) never cross `PREROUTING` except over loopback, which
/// passes. IPv4 only, like the pod network.
struct PublishedPortGuard: Sendable {
    /// The node's published range (`model-server-ports`).
    let ports: ClosedRange<Int>

    /// One chain per range, so agents with the same range on one host (the local cluster)
    /// write the same chain with the same content.
    var chain: String { "GPUPLANE-PUB-\(ports.lowerBound)-\(ports.upperBound)" }

    /// The jump from `PREROUTING`, as `iptables -S` lists it.
    var jump: [String] { ["-p", "tcp", "-m", "tcp", "--dport", "\(ports.lowerBound):\(ports.upperBound)", "-j", chain] }

    /// The iptables-restore input replacing the chain: `allowed` are IPv4 CIDRs.
    func rules(allowed: [String]) -> String {
        var lines = [
            "*mangle", ":\(chain) - [0:0]",
            "-A \(chain) -i lo -j RETURN",
            "-A \(chain) -m addrtype --src-type LOCAL -j RETURN",
        ]
        for source in allowed { lines.append("-A \(chain) -s \(source) -j RETURN") }
        lines += ["-A \(chain) -m addrtype --dst-type LOCAL -m conntrack --ctstate NEW -j DROP", "COMMIT", ""]
        return lines.joined(separator: "\n")
    }

    /// Writes the chain and makes `PREROUTING` jump to it (inserted first when missing; it is
    /// not moved when another agent's chain went ahead, since neither accepts anything);
    /// answers the chain as `iptables -S` lists it afterwards, to compare with later (a flushed
    /// or edited table is noticed and written again).
    @discardableResult
    func install(allowed: [String]) throws(PodNetworkError) -> String {
        try HostCommand.run(PodNetwork.iptablesRestore, ["--noflush", "--wait"], input: rules(allowed: allowed))
        if !(try jumps()) {
            try HostCommand.run(PodNetwork.iptables, ["--wait", "-t", "mangle", "-I", "PREROUTING", "1"] + jump)
        }
        return try listing()
    }

    /// The chain's rules as listed now, and whether `PREROUTING` jumps to it.
    func listing() throws(PodNetworkError) -> String {
        let rules = try HostCommand.run(PodNetwork.iptables, ["--wait", "-t", "mangle", "-S", chain])
        return rules + "jumped to: \(try jumps())"
    }

    private func jumps() throws(PodNetworkError) -> Bool {
        let listed = try HostCommand.run(PodNetwork.iptables, ["--wait", "-t", "mangle", "-S", "PREROUTING"])
        let line = (["-A", "PREROUTING"] + jump).joined(separator: " ")
        return listed.split(separator: "\n").contains { $0 == line }
    }

    /// Removes the jump and the chain (for tests and uninstalling).
    func remove() {
        while (try? HostCommand.run(PodNetwork.iptables, ["--wait", "-t", "mangle", "-D", "PREROUTING"] + jump)) != nil {}
        _ = try? HostCommand.run(PodNetwork.iptables, ["--wait", "-t", "mangle", "-F", chain])
        _ = try? HostCommand.run(PodNetwork.iptables, ["--wait", "-t", "mangle", "-X", chain])
    }

    /// The IPv4 CIDRs of `sources`: addresses become `/32`, CIDRs are kept (normalised), host
    /// names are resolved (each IPv4 address a `/32`). Sorted and without duplicates; names that
    /// do not resolve are left out and returned in `unresolved`.
    static func resolve(_ sources: [String]) -> (cidrs: [String], unresolved: [String]) {
        var cidrs = Set<String>()
        var unresolved: [String] = []
        for source in sources {
            if let cidr = cidr(source) {
                cidrs.insert(cidr)
                continue
            }
            let addresses = lookup(source)
            if addresses.isEmpty { unresolved.append(source) }
            for address in addresses { cidrs.insert(address + "/32") }
        }
        return (cidrs.sorted(), unresolved)
    }

    /// `a.b.c.d` → `a.b.c.d/32`; `a.b.c.d/n` → the network's CIDR (host bits cleared); nil for
    /// anything else (a host name, IPv6).
    static func cidr(_ text: String) -> String? { IPv4CIDR(covering: text)?.description }

    /// The IPv4 addresses `name` resolves to (getaddrinfo: /etc/hosts, DNS); empty on failure.
    static func lookup(_ name: String) -> [String] {
        var hints = addrinfo()
        hints.ai_family = AF_INET
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(name, nil, &hints, &result) == 0, let first = result else { return [] }
        defer { freeaddrinfo(first) }
        var out: [String] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let entry = cursor {
            if let address = entry.pointee.ai_addr, entry.pointee.ai_family == AF_INET {
                var ipv4 = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
                var buffer = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
                if inet_ntop(AF_INET, &ipv4, &buffer, socklen_t(buffer.count)) != nil {
                    out.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
                }
            }
            cursor = entry.pointee.ai_next
        }
        return out
    }
}
