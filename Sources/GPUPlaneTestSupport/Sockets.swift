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

    /// A TCP socket listening on 127.0.0.1 at a port of the kernel's choice, with an accept
    /// queue of `backlog`: its descriptor and port, or nil when it could not be made. Nothing
    /// accepts on it unless the caller does: connections complete in the kernel and their
    /// requests wait unanswered, as at a server that has stopped.
    public static func listenLoopback(backlog: Int32 = 16) -> (fd: Int32, port: Int)? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = in_addr_t(UInt32(0x7f00_0001).bigEndian)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && listen(fd, backlog) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard bound else {
            close(fd)
            return nil
        }
        return (fd, Int(UInt16(bigEndian: address.sin_port)))
    }

    /// The first line of what each connection waiting in `listener`'s accept queue has sent
    /// (a request line, e.g. `GET /healthz HTTP/1.1`), accepting and closing each; returns when
    /// none is left waiting.
    public static func drainRequestLines(_ listener: Int32) -> [String] {
        var lines: [String] = []
        while true {
            var waiting = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            guard poll(&waiting, 1, 0) > 0 else { return lines }
            let client = accept(listener, nil, nil)
            guard client >= 0 else { return lines }
            var buffer = [UInt8](repeating: 0, count: 512)
            let n = buffer.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            close(client)
            guard n > 0 else { continue }
            lines.append(String(decoding: buffer[0..<n].prefix { $0 != UInt8(ascii: "\r") }, as: UTF8.self))
        }
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
