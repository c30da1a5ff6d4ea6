import Foundation
import GPUPlaneTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// A loopback TCP proxy in front of a real etcd member that can make its watch streams go
/// silent while their connections stay open: ``freezeWatchStreams()`` makes every connection
/// that carried a `POST /v3/watch` so far drop what the member sends on it from then on. Other
/// connections (reads, writes, the status probe) pass both ways untouched, so the member keeps
/// answering. This is the fault a member alone cannot be made to show: a stream that is open
/// and reachable and no longer carries its messages.
final class StreamFreezingProxy: @unchecked Sendable {
    struct Failure: Error, CustomStringConvertible { var description: String }

    /// The proxy's port on 127.0.0.1.
    let port: Int
    /// How many watch requests came, in all.
    var watchRequests: Int { lock.withLock { requests } }

    private let upstreamPort: Int
    private let listener: Int32
    private let lock = NSLock()
    private var watches: [Int32: Bool] = [:]  // client fd → frozen
    private var requests = 0
    private var open: Set<Int32> = []

    init(upstreamPort: Int) throws {
        self.upstreamPort = upstreamPort
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard listener >= 0 else { throw Failure(description: "socket: \(errno)") }
        var address = Self.loopback(port: 0)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(listener, 64) == 0 else {
            close(listener)
            throw Failure(description: "bind/listen: \(errno)")
        }
        var actual = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &actual) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) }
        }
        port = Int(UInt16(bigEndian: actual.sin_port))
        self.listener = listener
        TestSockets.startAccepting(listener, name: "gpuplane-test-freezing-proxy") { [self] client in
            lock.withLock { _ = open.insert(client) }
            serve(client)
        }
    }

    /// From now on, what the member sends on every watch connection so far is dropped.
    func freezeWatchStreams() {
        lock.withLock { for fd in watches.keys { watches[fd] = true } }
    }

    /// Stops accepting and ends every open connection.
    func stop() {
        let connections = lock.withLock { open }
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        for fd in connections { shutdown(fd, Int32(SHUT_RDWR)) }
    }

    private func serve(_ client: Int32) {
        defer {
            lock.withLock {
                _ = watches.removeValue(forKey: client)
                _ = open.remove(client)
            }
            close(client)
        }
        let server = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard server >= 0 else { return }
        defer { close(server) }
        var address = Self.loopback(port: upstreamPort)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(server, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { return }
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        var fds = [pollfd(fd: client, events: Int16(POLLIN), revents: 0), pollfd(fd: server, events: Int16(POLLIN), revents: 0)]
        while true {
            // No timeout: a frozen stream stays open until a side closes it (or stop()).
            guard poll(&fds, 2, -1) > 0 else { return }
            if fds[0].revents != 0 {
                let n = buffer.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, 0) }
                if n <= 0 { return }
                // A request's head arrives as one chunk: a watch is known by its first line.
                if String(decoding: buffer[0..<min(n, 32)], as: UTF8.self).hasPrefix("POST /v3/watch ") {
                    lock.withLock {
                        requests += 1
                        if watches[client] == nil { watches[client] = false }
                    }
                }
                guard TestSockets.sendAll(server, buffer[0..<n]) else { return }
            }
            if fds[1].revents != 0 {
                let n = buffer.withUnsafeMutableBytes { recv(server, $0.baseAddress, $0.count, 0) }
                if n <= 0 { return }
                if lock.withLock({ watches[client] == true }) { continue }
                guard TestSockets.sendAll(client, buffer[0..<n]) else { return }
            }
        }
    }

    private static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr = in_addr(s_addr: UInt32(0x7F00_0001).bigEndian)
        return address
    }
}
