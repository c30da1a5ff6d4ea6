import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// One etcd member run by a test or benchmark: loopback ports, its own data folder, and the
/// process itself, which can be stopped, killed with SIGKILL and restarted on the same data
/// folder and ports.
public final class EtcdMember: @unchecked Sendable {
    /// The member's name in the cluster.
    public let name: String
    /// The port of the client URL (the v3 gateway).
    public let clientPort: Int
    /// The port of the peer URL.
    public let peerPort: Int
    /// The member's data folder.
    public let dataDirectory: URL
    /// The etcd binary.
    public let executable: String
    let initialCluster: String
    let extraArguments: [String]
    /// The member's TLS files: clients must present a certificate its CA signed.
    public let tls: EtcdTLSFiles?
    /// With ``tls``: a plain-HTTP port serving `/health` and `/metrics` only (etcd's
    /// `--listen-metrics-urls`), which the fixture polls.
    let metricsPort: Int?
    /// The user the member runs as (through `setpriv`, its data folder given to it), so that
    /// its packets alone can be matched (`iptables -m owner`); nil: as this process's user.
    public let uid: UInt32?
    private let lock = NSLock()
    private var process: ChildProcess?
    private var starts = 0

    /// The client URL, e.g. `http://127.0.0.1:40123` (`https://` with ``tls``).
    public var clientURL: String { "\(tls == nil ? "http" : "https")://127.0.0.1:\(clientPort)" }
    /// The peer URL.
    public var peerURL: String { "http://127.0.0.1:\(peerPort)" }

    init(
        name: String, clientPort: Int, peerPort: Int, dataDirectory: URL, initialCluster: String,
        executable: String, extraArguments: [String], tls: EtcdTLSFiles? = nil, uid: UInt32? = nil
    ) {
        self.uid = uid
        self.tls = tls
        self.metricsPort = tls == nil ? nil : TestEnvironment.freePort()
        self.name = name
        self.clientPort = clientPort
        self.peerPort = peerPort
        self.dataDirectory = dataDirectory
        self.initialCluster = initialCluster
        self.executable = executable
        self.extraArguments = extraArguments
        DataDirectories.shared.add(dataDirectory)
    }

    /// Whether the process runs.
    public var isRunning: Bool { lock.withLock { process?.isRunning ?? false } }

    /// The process id while it runs (for CPU accounting in benchmarks).
    public var pid: Int32? { lock.withLock { process.flatMap { $0.isRunning ? $0.pid : nil } } }

    /// The last lines of the member's log, for failure messages.
    public func logTail() -> String { lock.withLock { process?.logTail() ?? "" } }

    /// Starts the process (on the same data folder and ports as before, when restarting).
    /// Does not wait for it to serve: see ``waitUntilHealthy(timeout:)``.
    public func launch() throws {
        try lock.withLock {
            if let process, process.isRunning { return }
            starts += 1
            let arguments =
                [
                    "--name", name, "--data-dir", dataDirectory.appendingPathComponent("data").path,
                    "--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
                    "--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
                    "--initial-cluster", initialCluster, "--initial-cluster-state", "new",
                    "--initial-cluster-token", "gpuplane-test",
                    "--auto-compaction-retention", "0", "--quota-backend-bytes", "\(512 * 1024 * 1024)",
                    "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn",
                ] + tlsArguments + extraArguments
            var command = (executable: executable, arguments: arguments)
            if let uid {
                // Its own user: the data folder is its (what it wrote before too), and
                // setpriv execs etcd, so the process is etcd's.
                for path in [dataDirectory.path, dataDirectory.appendingPathComponent("data").path]
                where FileManager.default.fileExists(atPath: path) {
                    guard chown(path, uid, uid) == 0 else {
                        throw EtcdFixtureError(message: "cannot give \(path) to uid \(uid): \(String(cString: strerror(errno)))")
                    }
                }
                let wrapper = TestEnvironment.asUser(uid)
                command = (wrapper[0], Array(wrapper.dropFirst()) + [executable] + arguments)
            }
            process = try ChildProcess(
                executable: command.executable, arguments: command.arguments,
                logFile: dataDirectory.appendingPathComponent("etcd-\(starts).log"))
        }
    }

    private var tlsArguments: [String] {
        guard let tls, let metricsPort else { return [] }
        return [
            "--cert-file", tls.certFile, "--key-file", tls.keyFile, "--trusted-ca-file", tls.caFile, "--client-cert-auth",
            "--listen-metrics-urls", "http://127.0.0.1:\(metricsPort)",
        ]
    }

    /// Stops the process with SIGTERM (SIGKILL after 10 s).
    public func stop() {
        lock.withLock { process }?.stop()
    }

    /// Kills the process with SIGKILL, as a crash would.
    public func kill9() {
        lock.withLock { process }?.kill9()
    }

    /// Starts the process again on the same data folder and ports and waits until it serves.
    public func restart(timeout: Double = 30) async throws {
        try launch()
        try await waitUntilHealthy(timeout: timeout)
    }

    /// Waits until `GET /health` answers `"health":"true"` (the member has a leader and serves).
    public func waitUntilHealthy(timeout: Double = 30) async throws {
        do {
            try await eventually("etcd \(name) healthy on \(clientURL)", timeout: timeout, every: 0.05) {
                guard let body = httpGet(port: metricsPort ?? clientPort, path: "/health") else { return false }
                return body.contains("\"health\":\"true\"")
            }
        } catch {
            throw EtcdFixtureError(message: "\(error)\n--- etcd log ---\n\(logTail())")
        }
    }

    /// Kills the process and removes the data folder.
    public func destroy() {
        kill9()
        try? FileManager.default.removeItem(at: dataDirectory)
        DataDirectories.shared.remove(dataDirectory)
    }

    deinit { destroy() }
}

/// A member's TLS files (PEM), e.g. those `scripts/dev-certs` makes.
public struct EtcdTLSFiles: Sendable, Hashable {
    /// The CA that signs the member's and the clients' certificates.
    public var caFile: String
    /// The member's certificate.
    public var certFile: String
    /// Its key.
    public var keyFile: String

    /// Names the files.
    public init(caFile: String, certFile: String, keyFile: String) {
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
    }
}

/// Raised when an etcd fixture cannot start.
public struct EtcdFixtureError: Error, CustomStringConvertible {
    /// What went wrong, with the member's log.
    public let message: String
    public var description: String { message }
}

/// A single etcd on 127.0.0.1 free ports with a temporary data folder.
///
/// `let etcd = try await EtcdFixture.start()`, then connect to `etcd.endpoints`. The member is
/// killed and its folder removed by ``shutdown()`` or when the fixture is released.
public final class EtcdFixture: @unchecked Sendable {
    /// The member.
    public let member: EtcdMember

    /// The client URLs to connect to.
    public var endpoints: [String] { [member.clientURL] }

    /// Whether the etcd binary exists on this machine.
    public static var isAvailable: Bool { TestEnvironment.hasExecutable(executable) }

    /// The etcd binary (`$ETCD_BINARY`, else `/usr/bin/etcd`).
    public static var executable: String {
        ProcessInfo.processInfo.environment["ETCD_BINARY"] ?? "/usr/bin/etcd"
    }

    init(member: EtcdMember) { self.member = member }

    /// Starts etcd and waits until it serves. `extraArguments` go to etcd as they are (for
    /// example `--experimental-watch-progress-notify-interval=1s`). With `tls`, it serves
    /// `https://` only and asks every client for a certificate its CA signed.
    public static func start(extraArguments: [String] = [], tls: EtcdTLSFiles? = nil, timeout: Double = 30) async throws -> EtcdFixture {
        let dir = try TestEnvironment.temporaryDirectory(prefix: "etcd")
        let peer = TestEnvironment.freePort()
        let member = EtcdMember(
            name: "m0", clientPort: TestEnvironment.freePort(), peerPort: peer, dataDirectory: dir,
            initialCluster: "m0=http://127.0.0.1:\(peer)", executable: executable,
            extraArguments: extraArguments, tls: tls)
        let fixture = EtcdFixture(member: member)
        do {
            try member.launch()
            try await member.waitUntilHealthy(timeout: timeout)
        } catch {
            member.destroy()
            throw error
        }
        return fixture
    }

    /// Stops etcd gracefully (it can be restarted).
    public func stop() { member.stop() }
    /// Kills etcd with SIGKILL (it can be restarted).
    public func kill9() { member.kill9() }
    /// Restarts etcd on the same data folder and ports and waits until it serves.
    public func restart(timeout: Double = 30) async throws { try await member.restart(timeout: timeout) }
    /// Kills etcd and removes its data folder.
    public func shutdown() { member.destroy() }
}

/// A 3-member (or n-member) etcd cluster on loopback, bootstrapped with a static
/// `--initial-cluster`, one temporary data folder per member.
public final class EtcdClusterFixture: @unchecked Sendable {
    /// The members, in order.
    public let members: [EtcdMember]

    /// Every member's client URL.
    public var endpoints: [String] { members.map(\.clientURL) }

    init(members: [EtcdMember]) { self.members = members }

    /// Starts `size` members and waits until every one serves. With `users` (one user id per
    /// member, this process root and `setpriv` installed), member i runs as `users[i]`
    /// (``EtcdMember/uid``).
    public static func start(size: Int = 3, extraArguments: [String] = [], users: [UInt32]? = nil, timeout: Double = 30) async throws
        -> EtcdClusterFixture
    {
        if let users, users.count != size {
            throw EtcdFixtureError(message: "\(users.count) users for \(size) members")
        }
        let root = try TestEnvironment.temporaryDirectory(prefix: "etcd-cluster")
        DataDirectories.shared.add(root)
        let specs = (0..<size).map { i in
            (name: "m\(i)", client: TestEnvironment.freePort(), peer: TestEnvironment.freePort())
        }
        let initial = specs.map { "\($0.name)=http://127.0.0.1:\($0.peer)" }.joined(separator: ",")
        let members = specs.enumerated().map { i, s in
            EtcdMember(
                name: s.name, clientPort: s.client, peerPort: s.peer,
                dataDirectory: root.appendingPathComponent(s.name), initialCluster: initial,
                executable: EtcdFixture.executable,
                extraArguments: ["--heartbeat-interval", "50", "--election-timeout", "500"] + extraArguments,
                uid: users?[i])
        }
        let cluster = EtcdClusterFixture(members: members)
        do {
            for m in members {
                try FileManager.default.createDirectory(at: m.dataDirectory, withIntermediateDirectories: true)
                try m.launch()
            }
            for m in members { try await m.waitUntilHealthy(timeout: timeout) }
        } catch {
            cluster.shutdown()
            try? FileManager.default.removeItem(at: root)
            DataDirectories.shared.remove(root)
            throw error
        }
        cluster.root = root
        return cluster
    }

    private var root: URL?

    /// Kills member `index` with SIGKILL.
    public func kill(_ index: Int) { members[index].kill9() }
    /// Restarts member `index` on its data folder and ports and waits until it serves.
    public func restart(_ index: Int, timeout: Double = 30) async throws {
        try await members[index].restart(timeout: timeout)
    }
    /// Kills every member and removes the data folders.
    public func shutdown() {
        for m in members { m.destroy() }
        if let root {
            try? FileManager.default.removeItem(at: root)
            DataDirectories.shared.remove(root)
        }
    }

    deinit { shutdown() }
}

/// Data folders still in use, removed when the process exits, so fixtures that live as long
/// as the test run (shared ones) leave nothing behind either.
final class DataDirectories: @unchecked Sendable {
    static let shared = DataDirectories()
    private let lock = NSLock()
    private var paths: Set<String> = []

    private init() {
        atexit {
            for path in DataDirectories.shared.snapshot() { try? FileManager.default.removeItem(atPath: path) }
        }
    }

    func add(_ url: URL) { lock.withLock { _ = paths.insert(url.path) } }
    func remove(_ url: URL) { lock.withLock { _ = paths.remove(url.path) } }
    func snapshot() -> [String] { lock.withLock { Array(paths) } }
}

/// A plain HTTP/1.0 GET on 127.0.0.1 with a short timeout; the body, or nil on any failure.
/// (Kept to raw sockets so the fixtures need no HTTP library.)
func httpGet(port: Int, path: String, timeoutSeconds: Int = 2) -> String? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var tv = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = UInt16(port).bigEndian
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
        }
    }
    guard connected else { return nil }
    let request = "GET \(path) HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
    let sent = request.withCString { send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
    guard sent > 0 else { return nil }
    var response = [UInt8]()
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n <= 0 { break }
        response.append(contentsOf: buffer[0..<n])
        if response.count > 1 << 20 { break }
    }
    let text = String(decoding: response, as: UTF8.self)
    guard let split = text.range(of: "\r\n\r\n") else { return nil }
    return String(text[split.upperBound...])
}
