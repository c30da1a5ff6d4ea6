import Foundation
import GPUPlaneSystem

#if canImport(Glibc)
import Glibc
#endif

/// A journald that tests can write to and read back from.
///
/// libsystemd only ever sends to `/run/systemd/journal/socket`, so there is exactly one
/// journald per machine for tests: ``ensureRunning()`` reuses one that already listens there
/// (systemd's own, or one another test started) and otherwise starts
/// `/lib/systemd/systemd-journald` standalone (it needs root). The one it starts lives until
/// the test process exits, for every test in the process; a journald it did not start is
/// never stopped.
///
/// A standalone journald keeps its journal in `/run/log/journal/<machine-id>/` (volatile,
/// since nothing asks it to flush to `/var/log/journal`); `journalctl` without `-D` reads both
/// places, so ``entries(identifier:)`` finds entries wherever they are.
public actor JournaldFixture {
    /// The one fixture of the process.
    public static let shared = JournaldFixture()

    /// The native-protocol socket journald listens on, fixed by libsystemd.
    public static let socketPath = "/run/systemd/journal/socket"
    /// The journald binary started when none is listening.
    public static let executable = "/lib/systemd/systemd-journald"
    /// The reader.
    public static let journalctl = "/usr/bin/journalctl"

    private var child: ChildProcess?
    private var folder: URL?

    /// Whether this fixture started the journald now listening.
    public var startedByFixture: Bool { child?.isRunning ?? false }

    /// Whether tests can get a journald here: one listens already, or we can start one.
    public static var isAvailable: Bool {
        TestEnvironment.hasExecutable(journalctl)
            && (isListening() || (TestEnvironment.hasExecutable(executable) && geteuid() == 0))
    }

    /// Whether something accepts datagrams on ``socketPath`` right now (a socket file left by
    /// a journald that died does not count: connecting to it is refused).
    public static func isListening(at path: String = socketPath) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let connected = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        return connected == 0
    }

    /// Makes sure a journald listens on ``socketPath``, starting one if needed. Idempotent and
    /// safe to call from concurrent tests.
    public func ensureRunning() async throws {
        if Self.isListening() { return }
        if let child, child.isRunning {
            try await eventually("journald socket at \(Self.socketPath)", timeout: 20) { Self.isListening() }
            return
        }
        guard TestEnvironment.hasExecutable(Self.executable) else {
            throw JournaldFixtureError.notInstalled(Self.executable)
        }
        guard geteuid() == 0 else { throw JournaldFixtureError.needsRoot }
        let folder = try self.folder ?? TestEnvironment.temporaryDirectory(prefix: "journald")
        self.folder = folder
        // Keep journald from notifying a test's NOTIFY_SOCKET: an empty value makes sd_notify a
        // no-op in the child.
        let started = try ChildProcess(
            executable: Self.executable, arguments: [],
            environment: ["NOTIFY_SOCKET": "", "WATCHDOG_USEC": "", "WATCHDOG_PID": ""],
            logFile: folder.appendingPathComponent("journald.log"))
        child = started
        do {
            try await eventually("journald socket at \(Self.socketPath)", timeout: 20) {
                Self.isListening() || !started.isRunning
            }
        } catch {
            throw JournaldFixtureError.didNotStart(log: started.logTail())
        }
        guard started.isRunning || Self.isListening() else {
            throw JournaldFixtureError.didNotStart(log: started.logTail())
        }
    }

    /// Every entry with `SYSLOG_IDENTIFIER=identifier`, oldest first, read with
    /// `journalctl -t identifier -o json`.
    public func entries(identifier: String) async throws -> [JournalEntry] {
        try await Self.read(arguments: ["-t", identifier])
    }

    /// Waits until at least `count` entries tagged `identifier` are readable, and returns them.
    public func waitForEntries(
        identifier: String, count: Int = 1, timeout: Double = 20
    ) async throws -> [JournalEntry] {
        var found: [JournalEntry] = []
        try await eventually("\(count) journal entries for \(identifier)", timeout: timeout) {
            found = try await Self.read(arguments: ["-t", identifier])
            return found.count >= count
        }
        return found
    }

    /// Runs `journalctl -o json --no-pager` with `arguments` and decodes one entry per line.
    public static func read(arguments: [String]) async throws -> [JournalEntry] {
        let folder = try TestEnvironment.temporaryDirectory(prefix: "journalctl")
        defer { try? FileManager.default.removeItem(at: folder) }
        let output = folder.appendingPathComponent("out.json")
        let errors = folder.appendingPathComponent("err.txt")
        _ = FileManager.default.createFile(atPath: output.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errors.path, contents: nil)
        // Spawned, not Foundation's Process (whose launch can crash a process with many
        // descriptors open): stdout and stderr to their files, waited for off the pool.
        let out = open(output.path, O_WRONLY | O_CLOEXEC), err = open(errors.path, O_WRONLY | O_CLOEXEC), null = open("/dev/null", O_RDONLY | O_CLOEXEC)
        defer { for fd in [out, err, null] where fd >= 0 { close(fd) } }
        let pid = try Spawn.start(
            journalctl, ["-o", "json", "--no-pager", "-q"] + arguments, environment: ProcessInfo.processInfo.environment,
            stdin: null, stdout: out, stderr: err)
        let status = await TestEnvironment.offPool { Spawn.status(pid, wait: true) ?? -1 }
        let data = try Data(contentsOf: output)
        // Newer journalctl versions exit 1 with "No entries" when nothing matches; that is an
        // empty answer, not a failure.
        if status != 0 {
            let message = (try? String(contentsOf: errors, encoding: .utf8)) ?? ""
            if data.isEmpty && (message.isEmpty || message.contains("No entries")) { return [] }
            throw JournaldFixtureError.journalctlFailed(status: status, stderr: message)
        }
        return try data.split(separator: UInt8(ascii: "\n")).map { line in
            try JournalEntry(json: Data(line))
        }
    }
}

/// One journal entry as `journalctl -o json` prints it.
public struct JournalEntry: Sendable, CustomStringConvertible {
    /// Each field's values; a field sent more than once has several.
    public let fields: [String: [String]]

    /// Decodes one line of `journalctl -o json`: values are strings, arrays of byte values
    /// (for non-printable or non-UTF-8 data), or arrays of either (repeated fields).
    public init(json: Data) throws {
        guard let object = try JSONSerialization.jsonObject(with: json) as? [String: Any] else {
            throw JournaldFixtureError.undecodableEntry(String(decoding: json, as: UTF8.self))
        }
        var fields: [String: [String]] = [:]
        for (name, value) in object {
            fields[name] = Self.values(value)
        }
        self.fields = fields
    }

    private static func values(_ value: Any) -> [String] {
        if let string = value as? String { return [string] }
        if let items = value as? [Any] {
            if !items.isEmpty, items.allSatisfy({ $0 is NSNumber && !($0 is String) }) {
                let bytes = items.compactMap { ($0 as? NSNumber)?.uint8Value }
                return [String(decoding: bytes, as: UTF8.self)]
            }
            return items.flatMap { values($0) }
        }
        return ["\(value)"]
    }

    /// The first value of `field`.
    public subscript(field: String) -> String? { fields[field]?.first }

    /// The fields, sorted, for failure messages.
    public var description: String {
        fields.keys.sorted().map { "\($0)=\(fields[$0] ?? [])" }.joined(separator: " ")
    }
}

/// Why the journald fixture could not help.
public enum JournaldFixtureError: Error, CustomStringConvertible {
    /// The journald binary is missing.
    case notInstalled(String)
    /// Starting journald needs root.
    case needsRoot
    /// journald did not come up; its log tail.
    case didNotStart(log: String)
    /// `journalctl` failed.
    case journalctlFailed(status: Int32, stderr: String)
    /// A line of `journalctl -o json` was not a JSON object.
    case undecodableEntry(String)

    /// Human-readable text.
    public var description: String {
        switch self {
        case .notInstalled(let path): return "\(path) is not installed (apt-get install systemd)"
        case .needsRoot: return "starting a standalone journald needs root"
        case .didNotStart(let log): return "journald did not start listening: \(log)"
        case .journalctlFailed(let status, let stderr): return "journalctl exited \(status): \(stderr)"
        case .undecodableEntry(let line): return "not a journal entry: \(line)"
        }
    }
}
