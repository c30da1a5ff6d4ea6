import Foundation
import GPUPlaneSystem

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
    private let ended = Locked<Int32?>(nil)

    /// Starts `executable` with `arguments` (and this process's environment with `environment`
    /// over it), sending its output to `logFile`. Started with ``Spawn`` (not Foundation's
    /// `Process`, whose launch can crash a process with many descriptors open), with no
    /// descriptor of this process but its standard streams.
    public init(
        executable: String, arguments: [String], environment: [String: String]? = nil,
        logFile: URL
    ) throws {
        let output = open(logFile.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard output >= 0 else { throw ChildProcessError(message: "cannot open \(logFile.path): \(String(cString: strerror(errno)))") }
        defer { close(output) }
        let input = open("/dev/null", O_RDONLY | O_CLOEXEC)
        defer { if input >= 0 { close(input) } }
        let merged = ProcessInfo.processInfo.environment.merging(environment ?? [:]) { $1 }
        self.pid = try Spawn.start(executable, arguments, environment: merged, stdin: input, stdout: output, stderr: output)
        self.logFile = logFile
        ChildRegistry.shared.add(pid)
    }

    /// Whether the process has not exited yet (an exited one is reaped here).
    public var isRunning: Bool {
        if ended.withLock({ $0 }) != nil { return false }
        guard let status = Spawn.status(pid) else { return true }
        ended.withLock { $0 = status }
        return false
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
    /// Polls for the exit rather than blocking in `waitpid`, so a child that ignores SIGTERM
    /// still gets SIGKILL on time.
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

    /// The exit status once it has exited: the exit code, or 128 plus the signal that ended it.
    public var exitStatus: Int32? { isRunning ? nil : ended.withLock { $0 } }

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
    /// What every ``eventually(_:timeout:every:_:)`` deadline is multiplied by:
    /// `$GPUPLANE_TEST_TIME_SCALE`, else 3. The whole suite on a 2-core machine (CI's) starts
    /// a hundred fixtures at once, and a wait that takes a second alone took a minute there.
    public static let timeScale: Double = {
        guard let text = ProcessInfo.processInfo.environment["GPUPLANE_TEST_TIME_SCALE"], let value = Double(text), value > 0 else { return 3 }
        return value
    }()

    /// The command prefix that runs a program as user and group `uid`, without supplementary
    /// groups (`setpriv` execs the program, so the process is the program's): its packets can
    /// then be matched alone (`iptables -m owner --uid-owner`).
    public static func asUser(_ uid: UInt32) -> [String] {
        ["/usr/bin/setpriv", "--reuid=\(uid)", "--regid=\(uid)", "--clear-groups", "--"]
    }

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

/// Polls `condition` until it returns true or `timeout` seconds (times
/// ``TestEnvironment/timeScale``) pass. Tests wait on conditions with generous deadlines,
/// never on fixed sleeps; a deadline only bounds how long a broken run takes to fail.
public func eventually(
    _ what: String, timeout: Double = 30, every interval: Double = 0.05,
    _ condition: () async throws -> Bool
) async throws {
    let allowed = timeout * TestEnvironment.timeScale
    let deadline = Date().addingTimeInterval(allowed)
    while true {
        if (try? await condition()) == true { return }
        if Date() >= deadline { throw TimedOut(what: what, seconds: allowed) }
        try await Task.sleep(nanoseconds: UInt64(interval * 1_000_000_000))
    }
}

/// Why a child process could not be started or waited for.
public struct ChildProcessError: Error, CustomStringConvertible {
    /// What went wrong.
    public let message: String
    public var description: String { message }
}

/// A short-lived command run to its end with ``Spawn`` (not Foundation's `Process`).
public enum Command {
    /// Runs `executable` with `arguments` (this process's environment with `environment` over
    /// it), `input` on its standard input, and returns its exit status (128 plus the signal when
    /// one ended it) and its standard output and error together. After `timeout` it gets SIGKILL
    /// (its status then says so). Blocks the calling thread: from async code use
    /// ``TestEnvironment/offPool(_:_:)``.
    ///
    /// With `inheritEnvironment` false the child gets `environment` alone.
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String: String] = [:], inheritEnvironment: Bool = true,
        input: String? = nil, timeout: Duration? = nil
    ) throws -> (status: Int32, output: String) {
        var output: [Int32] = [0, 0]
        guard Self.pipe(&output) else { throw ChildProcessError(message: "pipe: \(String(cString: strerror(errno)))") }
        var inputPipe: [Int32] = [-1, -1]
        if input != nil, !Self.pipe(&inputPipe) {
            close(output[0])
            close(output[1])
            throw ChildProcessError(message: "pipe: \(String(cString: strerror(errno)))")
        }
        let null = input == nil ? open("/dev/null", O_RDONLY | O_CLOEXEC) : -1
        let pid: pid_t
        do {
            pid = try Spawn.start(
                executable, arguments,
                environment: inheritEnvironment ? ProcessInfo.processInfo.environment.merging(environment) { $1 } : environment,
                stdin: input == nil ? null : inputPipe[0], stdout: output[1], stderr: output[1])
        } catch {
            for fd in output + inputPipe + [null] where fd >= 0 { close(fd) }
            throw ChildProcessError(message: "\(error)")
        }
        close(output[1])
        if null >= 0 { close(null) }
        let finished = Locked(false)
        if let timeout {
            let watchdog = Thread {
                let deadline = ContinuousClock.now + timeout
                while ContinuousClock.now < deadline, !finished.withLock({ $0 }) { usleep(50_000) }
                // Killed only while not yet reaped, so the pid cannot be another process's.
                finished.withLock { done in if !done { kill(pid, SIGKILL) } }
            }
            watchdog.start()
        }
        if let input {
            close(inputPipe[0])
            // Written from a thread of its own, so a child that writes much before reading its
            // input cannot block both sides.
            let writer = inputPipe[1]
            let bytes = Array(input.utf8)
            let thread = Thread {
                var done = 0
                while done < bytes.count {
                    let n = bytes.withUnsafeBytes { write(writer, $0.baseAddress.map { $0 + done }, bytes.count - done) }
                    if n <= 0 { break }
                    done += n
                }
                close(writer)
            }
            thread.start()
        }
        var collected: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(output[0], $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            collected.append(contentsOf: buffer[0..<n])
        }
        close(output[0])
        // Reaped under the watchdog's lock, so it never signals a reused pid.
        let status = finished.withLock { done -> Int32 in
            done = true
            return Spawn.status(pid, wait: true) ?? -1
        }
        return (status, String(decoding: collected, as: UTF8.self))
    }

    /// A pipe whose ends are closed on exec (children get only what ``Spawn`` hands them).
    private static func pipe(_ ends: inout [Int32]) -> Bool {
        guard Glibc.pipe(&ends) == 0 else { return false }
        for fd in ends { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        return true
    }
}
