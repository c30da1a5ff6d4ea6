import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Plain socket helpers for the tests: raw loopback connections, and the fault-injecting proxies.
public enum TestSockets {
    /// Sends all of `bytes` on `fd` (no SIGPIPE); false once the peer is gone.
    public static func sendAll(_ fd: Int32, _ bytes: ArraySlice<UInt8>) -> Bool {
        var offset = bytes.startIndex
        while offset < bytes.endIndex {
            let n = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            offset += n
        }
        return true
    }

    /// A TCP connection to 127.0.0.1:`port`: its descriptor, or nil (`errno` says why) when it
    /// could not be made. `nonBlocking`: the connection is started and left under way.
    public static func connectLoopback(port: Int, nonBlocking: Bool = false) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | (nonBlocking ? Int32(SOCK_NONBLOCK.rawValue) : 0), 0)
        guard fd >= 0 else { return nil }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = in_addr_t(UInt32(0x7f00_0001).bigEndian)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 || (nonBlocking && errno == EINPROGRESS) else {
            let failure = errno
            close(fd)
            errno = failure
            return nil
        }
        return fd
    }

    /// Accepts connections on `listener` on a thread named `name` until the listener is
    /// closed (shut down), handing each to `serve` on a thread of its own.
    public static func startAccepting(_ listener: Int32, name: String, serve: @escaping @Sendable (Int32) -> Void) {
        let accepting = Thread {
            while true {
                let client = accept(listener, nil, nil)
                if client < 0 {
                    if errno == EINTR { continue }
                    return
                }
                Thread { serve(client) }.start()
            }
        }
        accepting.name = name
        accepting.start()
    }
}
