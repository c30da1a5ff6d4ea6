#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// Where this node publishes its model servers: the host IP the engine binds, the host name
/// their endpoints advertise, and the range of host ports to pick from.
struct ServingEndpoint: Sendable {
    /// The IP the engine publishes on.
    let hostIP: String
    /// The host of the advertised `http://<host>:<port>` endpoints.
    let advertisedHost: String
    /// The ports to pick from.
    let ports: ClosedRange<Int>

    /// From the node's address: an IP is bound and advertised; a host name is advertised and
    /// every interface bound; none means loopback only (a single-host cluster).
    init(address: String?, ports: ClosedRange<Int>) {
        self.ports = ports
        switch address {
        case nil, "":
            hostIP = "127.0.0.1"
            advertisedHost = "127.0.0.1"
        case let address? where ContainerEngine.ContainerSpec.isIPAddress(address):
            hostIP = address
            advertisedHost = address.contains(":") ? "[\(address)]" : address
        case let address?:
            hostIP = "0.0.0.0"
            advertisedHost = address
        }
    }

    /// `http://<host>:<port>`.
    func url(port: Int) -> String { "http://\(advertisedHost):\(port)" }

    /// The address a probe on this host connects to: the bound IP, or loopback when every
    /// interface is bound.
    var probeHost: String {
        switch hostIP {
        case "0.0.0.0": return "127.0.0.1"
        case "::": return "::1"
        default: return hostIP
        }
    }

    /// The lowest port of the range that no container of ours holds and that nothing else on
    /// the host has bound; nil when the range is used up.
    func pick(excluding used: Set<Int>) -> Int? {
        ports.first { !used.contains($0) && Self.canBind(ip: hostIP, port: $0) }
    }

    /// Whether a TCP socket can bind `ip:port` now (SO_REUSEADDR, so TIME_WAIT does not count).
    static func canBind(ip: String, port: Int) -> Bool {
        let v6 = ip.contains(":")
        let fd = socket(v6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        if v6 {
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = in_port_t(UInt16(port).bigEndian)
            guard inet_pton(AF_INET6, ip, &address.sin6_addr) == 1 else { return false }
            return withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) == 0 }
            }
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, ip, &address.sin_addr) == 1 else { return false }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}
