import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A real child process (etcd, journald, podman, the daemons…) started by a test, a benchmark
/// or the local cluster.
///
/// Every live child is remembered and killed when the test process exits, even when a
/// test fails part-way, so no server outlives its run.
public final class ChildProcess: @unchecked Sendable {
    /// The process id.
    public let pid: Int32
    /// Where stdout and stderr go.
    public let logFile: URL
    private let process: Process

    /// Starts `executable` with `arguments`, sending its output to `logFile`.
    public init(
        executable: String, arguments: [String], environment: [String: String]? = nil,
        logFile: URL
    ) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        _ = FileManager.default.createFile(atPath: logFile.path, contents: nil)
        let handle = try FileHandle(forWritingTo: logFile)
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        self.process = process
        self.pid = process.processIdentifier
        self.logFile = logFile
        ChildRegistry.shared.add(pid)
    }

    /// Whether the process has not exited yet. A zombie (exited, not yet reaped by
    /// Foundation, which reaps on the main queue) counts as exited.
    public var isRunning: Bool {
        guard process.isRunning else { return false }
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return false }
        let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first
        return state != "Z" && state != "X"
    }

    /// Sends `signal` (SIGTERM by default).
    public func signal(_ signal: Int32 = SIGTERM) {
        if isRunning { kill(pid, signal) }
    }

    /// Kills the process with SIGKILL and waits (up to 10 s) for it to be gone.
    public func kill9() {
        signal(SIGKILL)
        waitGone(timeout: 10)
        ChildRegistry.shared.remove(pid)
    }

    /// Sends SIGTERM and waits up to `timeout` seconds, then SIGKILL.
    ///
    /// Blocks the calling thread: from async code prefer ``TestEnvironment/offPool(_:_:)``. A
    /// child that is not ours to shut down gracefully (`curl`, which inherits the test runner's
    /// ignored SIGTERM) should get ``kill9()``.
    ///
    /// Never calls Foundation's `waitUntilExit`, which spins forever when the main queue (where
    /// Foundation notices child exits) is not being drained.
    public func stop(timeout: TimeInterval = 10) {
        guard isRunning else {
            ChildRegistry.shared.remove(pid)
            return
        }
        signal(SIGTERM)
        waitGone(timeout: timeout)
        if isRunning {
            kill(pid, SIGKILL)
            waitGone(timeout: 10)
        }
        ChildRegistry.shared.remove(pid)
    }

    private func waitGone(timeout: TimeInterval) {
        let deadline = Date().addingTimeInterval(timeout)
        while isRunning && Date() < deadline { usleep(20_000) }
    }

    /// The exit status, once Foundation has seen the exit.
    public var exitStatus: Int32? { process.isRunning ? nil : process.terminationStatus }

    /// The last `bytes` of the log, for failure messages.
    public func logTail(bytes: Int = 4000) -> String {
        guard let data = try? Data(contentsOf: logFile) else { return "" }
        return String(decoding: data.suffix(bytes), as: UTF8.self)
    }

    deinit { stop(timeout: 2) }
}

/// Kills every child still alive when the process exits.
final class ChildRegistry: @unchecked Sendable {
    static let shared = ChildRegistry()
    private let lock = NSLock()
    private var pids: Set<Int32> = []

    private init() {
        atexit {
            for pid in ChildRegistry.shared.snapshot() { kill(pid, SIGKILL) }
        }
    }

    func add(_ pid: Int32) { lock.withLock { _ = pids.insert(pid) } }
    func remove(_ pid: Int32) { lock.withLock { _ = pids.remove(pid) } }
    func snapshot() -> [Int32] { lock.withLock { Array(pids) } }
}

/// Removes the scratch folders of ``TestEnvironment/temporaryDirectory(prefix:keep:)`` when the
/// process exits (after ``ChildRegistry`` has killed the children writing into them).
final class ScratchRegistry: @unchecked Sendable {
    static let shared = ScratchRegistry()
    private let lock = NSLock()
    private var folders: [URL] = []

    private init() {
        atexit {
            for folder in ScratchRegistry.shared.snapshot() { try? FileManager.default.removeItem(at: folder) }
        }
    }

    func add(_ folder: URL) { lock.withLock { folders.append(folder) } }
    func snapshot() -> [URL] { lock.withLock { folders } }
}

/// Free TCP ports and scratch folders on this machine.
public enum TestEnvironment {
    /// Runs blocking work (process launches and waits, `podman` commands, file trees) on a
    /// thread of its own, so it never holds one of Swift's cooperative threads: with two of them
    /// on a 2-core machine, two blocking calls at once stall every test of the process (watches
    /// miss their idle deadlines, leases their renewals).
    public static func offPool<T: Sendable>(_ name: String = "gpuplane-test-blocking", _ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread { continuation.resume(with: Result { try body() }) }
            thread.name = name
            thread.start()
        }
    }

    /// ``offPool(_:_:)`` for work that cannot fail.
    public static func offPool<T: Sendable>(_ name: String = "gpuplane-test-blocking", _ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            let thread = Thread { continuation.resume(returning: body()) }
            thread.name = name
            thread.start()
        }
    }

    /// A TCP port on 127.0.0.1 that nothing listens on right now.
    ///
    /// Binds port 0, reads the port the kernel chose, and closes the socket. Ports handed out in
    /// this process are never handed out twice.
    public static func freePort() -> Int {
        while true {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            precondition(fd >= 0, "socket() failed")
            defer { close(fd) }
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = 0
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            var len = socklen_t(MemoryLayout<sockaddr_in>.size)
            let bound = withUnsafeMutablePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { ptr -> Bool in
                    bind(fd, ptr, len) == 0 && getsockname(fd, ptr, &len) == 0
                }
            }
            precondition(bound, "bind() on 127.0.0.1 failed")
            let port = Int(UInt16(bigEndian: addr.sin_port))
            if PortLedger.shared.claim(port) { return port }
        }
    }

    /// A new empty folder under the system's temporary folder, removed when the process exits
    /// unless `keep` (a local cluster's logs, which its user may want to read afterwards).
    public static func temporaryDirectory(prefix: String, keep: Bool = false) throws -> URL {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("gpuplane-\(prefix)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        if !keep { ScratchRegistry.shared.add(url) }
        return url
    }

    /// Whether an executable exists at `path`.
    public static func hasExecutable(_ path: String) -> Bool {
        FileManager.default.isExecutableFile(atPath: path)
    }
}

final class PortLedger: @unchecked Sendable {
    static let shared = PortLedger()
    private let lock = NSLock()
    private var used: Set<Int> = []
    func claim(_ port: Int) -> Bool { lock.withLock { used.insert(port).inserted } }
}

/// Raised when a condition did not come true before its deadline.
public struct TimedOut: Error, CustomStringConvertible {
    /// What was awaited.
    public let what: String
    /// How long was waited, in seconds.
    public let seconds: Double
    public var description: String { "timed out after \(seconds)s waiting for \(what)" }
}

/// Polls `condition` until it returns true or `timeout` seconds pass. Tests wait on
/// conditions with generous deadlines, never on fixed sleeps.
public func eventually(
    _ what: String, timeout: Double = 30, every interval: Double = 0.05,
    _ condition: () async throws -> Bool
) async throws {
    let deadline = Date().addingTimeInterval(timeout)
    while true {
        if (try? await condition()) == true { return }
        if Date() >= deadline { throw TimedOut(what: what, seconds: timeout) }
        try await Task.sleep(nanoseconds: UInt64(interval * 1_000_000_000))
    }
}

extension Pipe {
    /// A pipe whose two ends are closed in every program this process starts, except where a
    /// `Process` puts one on a child's standard input or output (that copy is made afresh).
    ///
    /// Foundation's `Process` leaves other descriptors open in the child, so a daemon started
    /// at the same moment by another test (a registry, a podman service) would otherwise keep
    /// the write end of this pipe open for its whole life, and a read to the end of the file
    /// would wait for that daemon instead of the command that wrote it.
    public static func closedOnExec() -> Pipe {
        let pipe = Pipe()
        for descriptor in [pipe.fileHandleForReading.fileDescriptor, pipe.fileHandleForWriting.fileDescriptor] {
            _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC)
        }
        return pipe
    }
}
