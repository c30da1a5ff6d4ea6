import Foundation
import GPUPlaneTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// A Unix-socket proxy in front of the real podman service that loses the answer to the first
/// request whose method is `method`: the request reaches podman whole and podman does it, but
/// its answer is read and dropped, so the client sees no answer and times out. Every other
/// request passes both ways untouched. This is the one fault the real service cannot be made
/// to show on demand: an operation that took effect without the caller learning it.
struct ProxyError: Error, CustomStringConvertible {
    var description: String
}

final class AnswerLosingProxy: @unchecked Sendable {
    /// The proxy's socket, for the client under test.
    let socketPath: String
    /// How many answers were dropped (0 or 1).
    var dropped: Int { lock.withLock { droppedCount } }

    private let upstream: String
    private let method: String
    private let listener: Int32
    private let lock = NSLock()
    private var droppedCount = 0

    init(upstream: String, losingFirst method: String) throws {
        self.upstream = upstream
        self.method = method
        socketPath = NSTemporaryDirectory() + "gpuplane-lossy-\(UUID().uuidString.prefix(8)).sock"
        listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard listener >= 0 else { throw ProxyError(description: "socket: \(errno)") }
        var address = try Self.address(socketPath)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0, listen(listener, 16) == 0 else {
            close(listener)
            throw ProxyError(description: "bind/listen \(socketPath): \(errno)")
        }
        TestSockets.startAccepting(listener, name: "gpuplane-test-lossy-proxy") { [self] in serve($0) }
    }

    /// Stops accepting and removes the socket file.
    func stop() {
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        unlink(socketPath)
    }

    /// Pipes one connection both ways; drops the answer when it carries the first `method`.
    private func serve(_ client: Int32) {
        defer { close(client) }
        guard let server = try? Self.connect(upstream) else { return }
        defer { close(server) }
        var losing = false
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        var fds = [pollfd(fd: client, events: Int16(POLLIN), revents: 0), pollfd(fd: server, events: Int16(POLLIN), revents: 0)]
        while true {
            guard poll(&fds, 2, 60_000) > 0 else { return }
            if fds[0].revents != 0 {
                let n = buffer.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, 0) }
                if n <= 0 {
                    // The client gave up. A losing connection waits for podman's answer (podman
                    // finishes what it was asked) before closing; others close now.
                    if losing { Self.drain(server) }
                    return
                }
                // A kept-alive connection carries several requests; a small request arrives
                // as one chunk, so each chunk's start is checked. Once losing, the connection
                // stays so: the client gives up on it.
                if !losing {
                    let start = String(decoding: buffer[0..<min(n, 16)], as: UTF8.self)
                    if start.hasPrefix(method + " ") {
                        losing = lock.withLock {
                            guard droppedCount == 0 else { return false }
                            droppedCount = 1
                            return true
                        }
                    }
                }
                guard TestSockets.sendAll(server, buffer[0..<n]) else { return }
            }
            if fds[1].revents != 0 {
                let n = buffer.withUnsafeMutableBytes { recv(server, $0.baseAddress, $0.count, 0) }
                if n <= 0 { return }
                if !losing { guard TestSockets.sendAll(client, buffer[0..<n]) else { return } }
            }
        }
    }

    /// Reads from `fd` until it closes or stays quiet for a while.
    private static func drain(_ fd: Int32) {
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        while poll(&poller, 1, 30_000) > 0 {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return }
            // The answer came; wait a moment more for its end, then close.
            poller.revents = 0
            if poll(&poller, 1, 200) <= 0 { return }
        }
    }

    private static func address(_ path: String) throws -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw ProxyError(description: "socket path too long: \(path)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        return address
    }

    private static func connect(_ path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ProxyError(description: "socket: \(errno)") }
        var address = try address(path)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else {
            close(fd)
            throw ProxyError(description: "connect \(path): \(errno)")
        }
        return fd
    }
}
