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

    /// Makes each read on `fd` wait at most `seconds` (`SO_RCVTIMEO`): a blocked `recv` then
    /// fails instead of hanging the test.
    public static func setReceiveTimeout(_ fd: Int32, seconds: Int) {
        var timeout = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Sends `GET path` on the connection `fd` (kept alive) and reads the answer: its head and
    /// the body its `Content-Length` gives, waiting at most `timeout` seconds for each read.
    /// Returns the status, or nil when the connection failed or the answer was not HTTP/1.1.
    public static func get(_ fd: Int32, path: String, timeout seconds: Int = 10) -> Int? {
        setReceiveTimeout(fd, seconds: seconds)
        guard sendAll(fd, Array("GET \(path) HTTP/1.1\r\nHost: test\r\n\r\n".utf8)[...]) else { return nil }
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        func readMore() -> Bool {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { return false }
            answer += buffer[0..<n]
            return true
        }
        let blank = Array("\r\n\r\n".utf8)
        var headEnd: Int?
        while headEnd == nil {
            guard readMore() else { return nil }
            headEnd = answer.firstRange(of: blank)?.upperBound
        }
        guard let headEnd else { return nil }
        let head = String(decoding: answer[..<headEnd], as: UTF8.self)
        let lines = head.split(separator: "\r\n")
        guard let statusLine = lines.first, statusLine.hasPrefix("HTTP/1.1 "),
            let status = Int(statusLine.dropFirst(9).prefix(3))
        else { return nil }
        let length = lines.dropFirst().compactMap { line -> Int? in
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2, parts[0].lowercased() == "content-length" else { return nil }
            return Int(parts[1].trimmingCharacters(in: .whitespaces))
        }.first ?? 0
        while answer.count - headEnd < length {
            guard readMore() else { return nil }
        }
        return status
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
