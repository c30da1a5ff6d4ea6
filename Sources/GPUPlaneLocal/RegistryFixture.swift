import CurlHTTP
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A real image registry on loopback: Debian's `docker-registry` (the CNCF distribution
/// registry, `/usr/bin/docker-registry serve config.yml`) on 127.0.0.1 and a free port, with
/// storage in a temporary folder and htpasswd (bcrypt) logins, so tests pull with credentials
/// and never from the internet.
///
/// ```swift
/// let registry = try await RegistryFixture.start(users: ["alice": "s3cret"])
/// let podman = try await PodmanFixture.start(insecureRegistries: registry.locations)
/// let image = try registry.push(podman.testImage, as: "team/app:1", from: podman, user: "alice")
/// ```
///
/// It speaks plain HTTP: the podman under test must list ``locations`` as insecure in its own
/// registries.conf (``PodmanFixture/start(timeout:insecureRegistries:)``), which keeps TLS
/// verification on for every other registry. With `throttle`, a second address
/// (``throttledAddress``) reaches the same registry through a proxy that sends at most that
/// many bytes a second towards the client, so a pull lasts long enough to watch its progress.
/// ``shutdown()``, or the process's exit, stops both and removes the folder.
public final class RegistryFixture: @unchecked Sendable {
    /// `127.0.0.1:<port>`: the registry's address, and the registry part of its image references.
    public let address: String
    /// `127.0.0.1:<port>` of the throttling proxy, when started with one.
    public let throttledAddress: String?
    /// While this file exists (``holdThrottledPulls()``), the throttling proxy stops sending
    /// towards a client that has had 12 MB on its connection (at least a second of transfer at the throttle, so the engine has reported progress), until ``releaseThrottledPulls()``:
    /// a blob's transfer stands still midway, so a test can see a pull in progress without
    /// depending on how fast this machine is.
    public var holdFile: URL { directory.appendingPathComponent("hold") }
    /// The users and their passwords.
    public let users: [String: String]
    /// The fixture's folder.
    public let directory: URL
    private let server: ChildProcess
    private let proxy: ChildProcess?

    /// The registry binary (`$DOCKER_REGISTRY_BINARY`, else `/usr/bin/docker-registry`).
    public static var executable: String {
        ProcessInfo.processInfo.environment["DOCKER_REGISTRY_BINARY"] ?? "/usr/bin/docker-registry"
    }

    /// The tool that writes bcrypt htpasswd lines (Debian's `apache2-utils`).
    static let htpasswd = "/usr/bin/htpasswd"

    /// Whether the registry and `htpasswd` are installed (scripts/install-deps installs both).
    public static var isAvailable: Bool {
        TestEnvironment.hasExecutable(executable) && TestEnvironment.hasExecutable(htpasswd)
    }

    /// Holds every transfer through the throttling proxy once it has sent 12 MB (``holdFile``).
    public func holdThrottledPulls() throws {
        try Data().write(to: holdFile)
    }

    /// Lets held transfers go on.
    public func releaseThrottledPulls() {
        try? FileManager.default.removeItem(at: holdFile)
    }

    /// Every address the registry answers on (the proxy's too): what a podman under test
    /// must treat as insecure (plain HTTP).
    public var locations: [String] { [address] + (throttledAddress.map { [$0] } ?? []) }

    private init(
        address: String, throttledAddress: String?, users: [String: String], directory: URL, server: ChildProcess,
        proxy: ChildProcess?
    ) {
        self.address = address
        self.throttledAddress = throttledAddress
        self.users = users
        self.directory = directory
        self.server = server
        self.proxy = proxy
    }

    /// Writes the htpasswd file and configuration, starts the registry (and the throttling
    /// proxy when `throttle` bytes a second is given) and waits until `/v2/` answers 401, as a
    /// registry with authentication does to a client without credentials.
    public static func start(users: [String: String], throttle: Int? = nil, timeout: Double = 30) async throws -> RegistryFixture {
        guard isAvailable else {
            throw RegistryFixtureError(message: "\(executable) and \(htpasswd) are needed (Debian: docker-registry apache2-utils; see scripts/install-deps)")
        }
        let directory = try TestEnvironment.temporaryDirectory(prefix: "registry")
        let port = TestEnvironment.freePort()
        let address = "127.0.0.1:\(port)"
        try await TestEnvironment.offPool("gpuplane-registry-setup") {
            var lines = ""
            for (user, password) in users.sorted(by: { $0.key < $1.key }) {
                lines += try PodmanFixture.run(htpasswd, ["-Bbn", user, password]).trimmingCharacters(in: .whitespacesAndNewlines) + "\n"
            }
            try lines.write(to: directory.appendingPathComponent("htpasswd"), atomically: true, encoding: .utf8)
        }
        try """
        # Written by gpuplane's RegistryFixture for one test run.
        version: 0.1
        log:
          level: info
          accesslog:
            disabled: true
        storage:
          filesystem:
            rootdirectory: \(directory.appendingPathComponent("data").path)
          delete:
            enabled: true
        http:
          addr: \(address)
        auth:
          htpasswd:
            realm: gpuplane-test
            path: \(directory.appendingPathComponent("htpasswd").path)

        """.write(to: directory.appendingPathComponent("config.yml"), atomically: true, encoding: .utf8)
        let server = try ChildProcess(
            executable: executable, arguments: ["serve", directory.appendingPathComponent("config.yml").path],
            logFile: directory.appendingPathComponent("registry.log"))
        var proxy: ChildProcess?
        var throttled: String?
        do {
            try await eventually("registry answering 401 on http://\(address)/v2/", timeout: timeout, every: 0.05) {
                try await status(of: "http://\(address)/v2/") == 401
            }
            if let throttle {
                let proxyPort = TestEnvironment.freePort()
                let script = directory.appendingPathComponent("throttle.py")
                try throttleScript.write(to: script, atomically: true, encoding: .utf8)
                proxy = try ChildProcess(
                    executable: "/usr/bin/python3", arguments: [
                        script.path, String(proxyPort), String(port), String(throttle),
                        directory.appendingPathComponent("hold").path,
                    ],
                    logFile: directory.appendingPathComponent("throttle.log"))
                throttled = "127.0.0.1:\(proxyPort)"
                try await eventually("throttling proxy answering 401 on http://127.0.0.1:\(proxyPort)/v2/", timeout: timeout, every: 0.05) {
                    try await status(of: "http://127.0.0.1:\(proxyPort)/v2/") == 401
                }
            }
        } catch {
            proxy?.stop(timeout: 2)
            server.stop(timeout: 2)
            throw RegistryFixtureError(message: "\(error)\n--- registry log ---\n\(server.logTail())")
        }
        return RegistryFixture(
            address: address, throttledAddress: throttled, users: users, directory: directory, server: server, proxy: proxy)
    }

    /// Pushes the local image `source` of `podman`'s store to this registry as `repository`
    /// (`team/app:1`), logged in as `user`, and returns the pushed reference
    /// (`127.0.0.1:<port>/team/app:1`). Nothing is tagged in the local store, so the engine
    /// does not hold the pushed reference until it pulls it.
    @discardableResult
    public func push(_ source: String, as repository: String, from podman: PodmanFixture, user: String) throws -> String {
        guard let password = users[user] else { throw RegistryFixtureError(message: "no user \(user) in the registry fixture") }
        let reference = "\(address)/\(repository)"
        try podman.podman(["push", "--quiet", "--tls-verify=false", "--creds", "\(user):\(password)", source, "docker://\(reference)"])
        return reference
    }

    /// The last lines of the registry's log, for failure messages.
    public func logTail() -> String { server.logTail() }

    /// Stops the registry (and proxy) and removes the folder.
    public func shutdown() {
        proxy?.stop(timeout: 2)
        server.stop(timeout: 5)
        try? FileManager.default.removeItem(at: directory)
    }

    deinit { shutdown() }

    private static let http = CurlHTTP.Client(name: "registry-fixture-curl", maxConnections: 2)

    /// The status `url` answers with.
    static func status(of url: String) async throws -> Int {
        try await http.perform(CurlHTTP.Request(url: url, timeout: .seconds(2), connectTimeout: .seconds(1))).status
    }

    /// A TCP proxy that sends at most `rate` bytes a second from the registry to the client.
    static let throttleScript = """
        # Written by gpuplane's RegistryFixture: a TCP proxy from 127.0.0.1:LISTEN to
        # 127.0.0.1:TARGET that sends at most RATE bytes a second towards the client, and
        # while the file HOLD exists sends nothing more on a connection that has had 12 MB.
        import os, socket, sys, threading, time
        listen, target, rate, hold = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

        def pipe(source, sink, throttled):
            sent = 0
            try:
                while True:
                    data = source.recv(16384)
                    if not data:
                        break
                    while throttled and sent >= 12_000_000 and os.path.exists(hold):
                        time.sleep(0.05)
                    sink.sendall(data)
                    sent += len(data)
                    if throttled:
                        time.sleep(len(data) / rate)
            except OSError:
                pass
            finally:
                try:
                    sink.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", listen))
        server.listen(64)
        while True:
            client, _ = server.accept()
            upstream = socket.create_connection(("127.0.0.1", target))
            threading.Thread(target=pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=pipe, args=(upstream, client, True), daemon=True).start()

        """
}

/// Raised when the registry fixture cannot start or push.
public struct RegistryFixtureError: Error, CustomStringConvertible {
    /// What went wrong.
    public let message: String
    public var description: String { message }
}
