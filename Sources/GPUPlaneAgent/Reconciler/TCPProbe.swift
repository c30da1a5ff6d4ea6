#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// The readiness probe of a pod's ingress port: a TCP connection to the host port it is
/// published on. Nothing is sent, so the application's logs see no probe traffic.
///
/// The socket is non-blocking and polled with a zero timeout between short sleeps, so the probe
/// never blocks a thread of Swift's cooperative pool (which has one thread per core).
enum TCPProbe {
    /// Whether a TCP connection to `host:port` (an IP address) completes within `timeout`, and
    /// why not when it does not.
    static func connect(host: String, port: Int, timeout: Duration) async -> (connected: Bool, why: String) {
        let v6 = host.contains(":")
        let fd = socket(v6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return (false, "socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var started: Int32
        if v6 {
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = in_port_t(UInt16(truncatingIfNeeded: port).bigEndian)
            guard inet_pton(AF_INET6, host, &address.sin6_addr) == 1 else { return (false, "\(host) is not an IP address") }
            started = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
        } else {
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(truncatingIfNeeded: port).bigEndian)
            guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else { return (false, "\(host) is not an IP address") }
            started = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
        if started == 0 { return (true, "connected") }
        guard errno == EINPROGRESS else { return (false, String(cString: strerror(errno))) }
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while true {
            var entry = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            let ready = poll(&entry, 1, 0)
            if ready > 0 {
                var error: Int32 = 0
                var length = socklen_t(MemoryLayout<Int32>.size)
                guard getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) == 0 else {
                    return (false, String(cString: strerror(errno)))
                }
                return error == 0 ? (true, "connected") : (false, String(cString: strerror(error)))
            }
            if ready < 0 && errno != EINTR { return (false, String(cString: strerror(errno))) }
            if clock.now >= deadline { return (false, "no connection within \(timeout)") }
            do {
                try await Task.sleep(for: .milliseconds(10))
            } catch {
                return (false, "cancelled")
            }
        }
    }
}
