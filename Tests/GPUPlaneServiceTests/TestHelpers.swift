import Foundation
import GPUPlaneService
import GPUPlaneTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// Collects lines written to a `LogLineSink`.
final class LineCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [String] = []

    var sink: LogLineSink { LogLineSink { line in self.append(line) } }
    var lines: [String] { lock.withLock { stored } }
    private func append(_ line: String) { lock.withLock { stored.append(line) } }
}

/// A flag shared between a test and the code it drives.
final class Flag: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Bool
    private var reads = 0
    init(_ value: Bool) { self.value = value }
    func get() -> Bool {
        lock.withLock {
            reads += 1
            return value
        }
    }
    func set(_ newValue: Bool) { lock.withLock { value = newValue } }
    var readCount: Int { lock.withLock { reads } }
}

/// A unix datagram socket in a fresh temporary folder, standing in for systemd's notify socket.
final class NotifySocket: @unchecked Sendable {
    let path: String
    private let fd: Int32
    private let lock = NSLock()
    private var received: [String] = []

    init() throws {
        let folder = try TestEnvironment.temporaryDirectory(prefix: "notify")
        path = folder.appendingPathComponent("notify.sock").path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let bound = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard bound == 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
    }

    deinit {
        close(fd)
        unlink(path)
    }

    /// Every datagram received so far, oldest first.
    var messages: [String] {
        lock.withLock {
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = recv(fd, &buffer, buffer.count, 0)
                if count <= 0 { break }
                received.append(String(decoding: buffer.prefix(count), as: UTF8.self))
            }
            return received
        }
    }
}

/// A journald identifier no other test run uses.
func uniqueIdentifier(_ prefix: String) -> String {
    "\(prefix)-\(UUID().uuidString.prefix(8).lowercased())"
}
