import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A rootful `podman system service` on a unix socket in a temporary folder, with its own
/// storage, a local busybox test image and fake GPUs described by a CDI spec.
///
/// ```swift
/// let podman = try await PodmanFixture.start()
/// // speak the Docker/libpod API to podman.socketPath; create from podman.testImage;
/// // give GPUs as CDI devices "\(podman.cdiKind)=<index>".
/// ```
///
/// Podman reads a test-owned `containers.conf` (runc, the cgroupfs manager, file events,
/// explicit ulimits) through `CONTAINERS_CONF`, keeps images and containers under its own
/// `--root`/`--runroot`, so the machine's storage is never touched, and networks under its own
/// folder. The fake GPUs' CDI spec goes to `/var/run/cdi` (podman 4.3 reads no other folder)
/// under a vendor kind unique to the fixture, so it can never clash with a real
/// `nvidia.com/gpu` spec or another test run. ``shutdown()``, or the process's exit, removes
/// every container, the storage, the spec and the folder.
public final class PodmanFixture: @unchecked Sendable {
    /// One fake GPU: a CDI device whose only edit is the environment
    /// `GPUPLANE_FAKE_GPU_INDEX=<index>`, `GPUPLANE_FAKE_GPU_UUID=<uuid>` and
    /// `GPUPLANE_FAKE_GPU_<index>_UUID=<uuid>` (the last one tells every GPU of a multi-GPU
    /// container apart; of the first two, the last device applied wins).
    public struct FakeGPU: Sendable, Hashable {
        /// The index, which is also the CDI device name.
        public let index: Int
        /// An NVML-style UUID.
        public let uuid: String
    }

    /// The fixture's folder.
    public let directory: URL
    /// The API socket.
    public let socketPath: String
    /// A local image with a static busybox (`sh`, `env`, `sleep`, `cat`, … on `/bin`),
    /// imported once per fixture.
    public let testImage: String
    /// The same rootfs with `/bin/gpuplane-stand-in-model-server` as its entrypoint: a plainly
    /// named stand-in for vLLM that serves no model (see ``StandInModelServer``).
    public let standInModelServerImage: String
    /// The CDI kind of the fake GPUs, e.g. `gpuplane-1a2b3c4d.test/gpu`.
    public let cdiKind: String
    /// The fake GPUs, indices 0 to 7.
    public let fakeGPUs: [FakeGPU]
    /// The CDI spec file.
    public let cdiSpecPath: String
    /// A word unique to this fixture, for container names.
    public let runID: String
    private let serviceLock = NSLock()
    private var currentService: ChildProcess
    private var service: ChildProcess { serviceLock.withLock { currentService } }
    private var serviceStarts = 1
    private let cleanup: PodmanCleanup

    /// The podman binary (`$PODMAN_BINARY`, else `/usr/bin/podman`).
    public static var executable: String {
        ProcessInfo.processInfo.environment["PODMAN_BINARY"] ?? "/usr/bin/podman"
    }

    /// Whether podman, runc and a static busybox are installed and this process is root
    /// (rootful podman, and `/var/run/cdi`, need it).
    public static var isAvailable: Bool {
        getuid() == 0 && TestEnvironment.hasExecutable(executable) && runc != nil && busybox != nil
    }

    /// The runc binary, where Debian puts it; nil when none.
    public static var runc: String? {
        ["/usr/sbin/runc", "/usr/bin/runc", "/sbin/runc"].first(where: TestEnvironment.hasExecutable)
    }

    /// A static busybox; nil when none.
    public static var busybox: String? {
        ["/bin/busybox", "/usr/bin/busybox"].first(where: TestEnvironment.hasExecutable)
    }

    private init(
        directory: URL, socketPath: String, testImage: String, standInModelServerImage: String, cdiKind: String,
        fakeGPUs: [FakeGPU], cdiSpecPath: String, runID: String, service: ChildProcess, cleanup: PodmanCleanup
    ) {
        self.directory = directory
        self.socketPath = socketPath
        self.testImage = testImage
        self.standInModelServerImage = standInModelServerImage
        self.cdiKind = cdiKind
        self.fakeGPUs = fakeGPUs
        self.cdiSpecPath = cdiSpecPath
        self.runID = runID
        self.currentService = service
        self.cleanup = cleanup
    }

    /// Writes the configuration and the CDI spec, imports the test image, starts the service
    /// and waits until `GET /_ping` answers.
    ///
    /// Podman reads a registries.conf of the fixture's own (`CONTAINERS_REGISTRIES_CONF`): no
    /// search registries (a short name never reaches the internet), and each of
    /// `insecureRegistries` (`127.0.0.1:5000`, a ``RegistryFixture``'s ``RegistryFixture/locations``)
    /// spoken to over plain HTTP; every other registry keeps TLS verification.
    ///
    /// With `networkNamespace` (a name under `/var/run/netns`, e.g. a ``NetnsHost``'s), the
    /// service and every podman command of the fixture run in that network namespace (through
    /// `nsenter --net`, which, unlike `ip netns exec`, keeps the host's `/sys` and its cgroups),
    /// so its containers' networks, routes and iptables rules are that namespace's.
    public static func start(
        timeout: Double = 60, insecureRegistries: [String] = [], networkNamespace: String? = nil
    ) async throws -> PodmanFixture {
        guard isAvailable, let busybox else {
            throw PodmanFixtureError(message: "podman, runc and busybox-static are needed, as root (see scripts/test)")
        }
        // Everything up to the service's start blocks (podman imports, files): off the pool.
        let prepared = try await TestEnvironment.offPool("gpuplane-podman-start") { 
            try prepare(busybox: busybox, insecureRegistries: insecureRegistries, networkNamespace: networkNamespace)
        }
        let (directory, socketPath, service) = (prepared.directory, prepared.socketPath, prepared.service)
        do {
            try await eventually("podman service answering /_ping on \(socketPath)", timeout: timeout, every: 0.1) {
                unixHTTPGet(socketPath: socketPath, path: "/_ping")?.hasSuffix("OK") ?? false
            }
        } catch {
            service.stop()
            throw PodmanFixtureError(message: "\(error)\n--- podman log ---\n\(service.logTail())")
        }
        return PodmanFixture(
            directory: directory, socketPath: socketPath, testImage: prepared.testImage,
            standInModelServerImage: prepared.standInImage, cdiKind: prepared.cdiKind, fakeGPUs: prepared.gpus,
            cdiSpecPath: prepared.cdiSpecPath, runID: prepared.runID, service: service, cleanup: prepared.cleanup)
    }

    /// What ``start(timeout:)`` prepares on a thread of its own.
    private struct Prepared: @unchecked Sendable {
        let directory: URL
        let runID: String
        let cdiKind: String
        let cdiSpecPath: String
        let cleanup: PodmanCleanup
        let gpus: [FakeGPU]
        let testImage: String
        let standInImage: String
        let socketPath: String
        let service: ChildProcess
    }

    /// Writes the configuration, network and CDI spec, imports the images and launches the
    /// service (blocking work).
    private static func prepare(busybox: String, insecureRegistries: [String], networkNamespace: String?) throws -> Prepared {
        sweepStaleFixtures()
        let directory = try TestEnvironment.temporaryDirectory(prefix: "podman")
        var registries = "# Written by gpuplane's PodmanFixture for one test run.\nunqualified-search-registries = []\n"
        for location in insecureRegistries {
            registries += "\n[[registry]]\nlocation = \"\(location)\"\ninsecure = true\n"
        }
        try registries.write(to: directory.appendingPathComponent("registries.conf"), atomically: true, encoding: .utf8)
        let runID = String(UUID().uuidString.lowercased().filter { $0 != "-" }.prefix(8))
        let config = directory.appendingPathComponent("containers.conf")
        let cdiKind = "gpuplane-\(runID).test/gpu"
        let cdiSpecPath = "/var/run/cdi/gpuplane-fake-\(runID).yaml"
        try "\(getpid())\n\(cdiSpecPath)\n".write(
            to: directory.appendingPathComponent("owner"), atomically: true, encoding: .utf8)
        if let networkNamespace {
            try networkNamespace.write(to: directory.appendingPathComponent("netns"), atomically: true, encoding: .utf8)
        }
        let cleanup = PodmanCleanup(executable: executable, directory: directory, cdiSpecPath: cdiSpecPath)
        let globals = cleanup.globals
        let environment = cleanup.environment
        PodmanCleanup.register(cleanup)

        try """
        # Written by gpuplane's PodmanFixture for one test run; the machine's files are untouched.
        [containers]
        default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

        [engine]
        runtime = "runc"
        cgroup_manager = "cgroupfs"
        events_logger = "file"

        [network]
        network_config_dir = "\(directory.appendingPathComponent("networks").path)"
        default_network = "gpuplane-\(runID)"

        """.write(to: config, atomically: true, encoding: .utf8)
        // Its own bridge and subnet: podman's default network is the same bridge (podman0) and
        // subnet for every podman on the host, so two fixtures' containers could get one IP
        // and a published port could lead into the other fixture's container.
        try Self.createNetwork(runID: runID, directory: directory)

        let gpus = (0..<8).map { FakeGPU(index: $0, uuid: String(format: "GPU-fa4e%04x-0000-4000-8000-%012x", $0, $0)) }
        try writeCDISpec(kind: cdiKind, gpus: gpus, to: cdiSpecPath)

        let testImage = "localhost/gpuplane-test-busybox:latest"
        let tarball = try makeRootfsTarball(busybox: busybox, in: directory)
        try cleanup.podman(["import", "--change", "CMD [\"/bin/sh\"]", tarball.path, testImage])
        let standInImage = "localhost/gpuplane-stand-in-model-server:latest"
        try cleanup.podman([
            "import", "--change", "ENTRYPOINT [\"/bin/gpuplane-stand-in-model-server\"]", "--change", "CMD []", tarball.path,
            standInImage,
        ])

        let socketPath = directory.appendingPathComponent("podman.sock").path
        let service = try ChildProcess(
            executable: cleanup.executable, arguments: globals + ["system", "service", "--time=0", "unix://\(socketPath)"],
            environment: environment, logFile: directory.appendingPathComponent("service.log"))
        try "\(service.pid)\n".write(
            to: directory.appendingPathComponent("service.pid"), atomically: true, encoding: .utf8)
        return Prepared(
            directory: directory, runID: runID, cdiKind: cdiKind, cdiSpecPath: cdiSpecPath, cleanup: cleanup, gpus: gpus,
            testImage: testImage, standInImage: standInImage, socketPath: socketPath, service: service)
    }

    /// Runs the podman command line on the fixture's storage and configuration (`podman ps -a`,
    /// `podman rm -f NAME`…) and returns its output; throws when it exits non-zero.
    @discardableResult
    public func podman(_ arguments: [String]) throws -> String {
        try cleanup.podman(arguments)
    }

    /// ``podman(_:)`` from async code, on a thread of its own: the command waits for podman
    /// (seconds on a loaded machine), which on one of Swift's few cooperative threads stalled
    /// every in-process server and agent of the test run meanwhile.
    @discardableResult
    public func podman(_ arguments: [String]) async throws -> String {
        let cleanup = self.cleanup
        return try await TestEnvironment.offPool("podman") { try cleanup.podman(arguments) }
    }

    /// Imports the test image's rootfs plus `/payload`, `payloadBytes` random (so
    /// incompressible) bytes, as the local image `name`: an image big enough for a pull to
    /// take a while.
    public func importImage(_ name: String, payloadBytes: Int) throws {
        let folder = directory.appendingPathComponent("payload-\(PodmanFixture.counter.next())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let random = try FileHandle(forReadingFrom: URL(fileURLWithPath: "/dev/urandom"))
        defer { try? random.close() }
        _ = FileManager.default.createFile(atPath: folder.appendingPathComponent("payload").path, contents: nil)
        let out = try FileHandle(forWritingTo: folder.appendingPathComponent("payload"))
        var left = payloadBytes
        while left > 0 {
            let chunk = random.readData(ofLength: min(left, 1 << 20))
            out.write(chunk)
            left -= chunk.count
        }
        try out.close()
        let tarball = folder.appendingPathComponent("image.tar")
        try FileManager.default.copyItem(at: directory.appendingPathComponent("rootfs.tar"), to: tarball)
        _ = try Self.run("/bin/tar", ["-C", folder.path, "-rf", tarball.path, "./payload"])
        try podman(["import", "--change", "CMD [\"/bin/sh\"]", tarball.path, name])
    }

    /// A container name unique to this fixture: `gpuplane-test-<base>-<runID>-<n>`.
    public func uniqueName(_ base: String) -> String {
        "gpuplane-test-\(base)-\(runID)-\(PodmanFixture.counter.next())"
    }

    /// The last lines of the service's log, for failure messages.
    public func logTail() -> String { service.logTail() }

    /// Kills the service with SIGKILL, as a crash would (containers keep running under their
    /// conmon), and, unless `restart` is false, starts it again on the same socket with the
    /// same storage (a new log, `service-<n>.log`) and waits until `GET /_ping` answers.
    public func killService(restart: Bool = true, timeout: Double = 60) async throws {
        service.kill9()
        guard restart else { return }
        try await startService(timeout: timeout)
    }

    /// Starts the service again after ``killService(restart:timeout:)`` (unless it runs) and
    /// waits until `GET /_ping` answers.
    public func startService(timeout: Double = 60) async throws {
        let (cleanup, directory, socketPath) = (self.cleanup, self.directory, self.socketPath)
        let started = try serviceLock.withLock { () -> ChildProcess? in
            guard !currentService.isRunning else { return nil }
            serviceStarts += 1
            // The dead service's socket file stays behind; the new one binds the path afresh.
            unlink(socketPath)
            let process = try ChildProcess(
                executable: cleanup.executable, arguments: cleanup.globals + ["system", "service", "--time=0", "unix://\(socketPath)"],
                environment: cleanup.environment, logFile: directory.appendingPathComponent("service-\(serviceStarts).log"))
            try "\(process.pid)\n".write(to: directory.appendingPathComponent("service.pid"), atomically: true, encoding: .utf8)
            currentService = process
            return process
        }
        guard let started else { return }
        do {
            try await eventually("podman service answering /_ping on \(socketPath) again", timeout: timeout, every: 0.1) {
                unixHTTPGet(socketPath: socketPath, path: "/_ping")?.hasSuffix("OK") ?? false
            }
        } catch {
            throw PodmanFixtureError(message: "\(error)\n--- podman log ---\n\(started.logTail())")
        }
    }

    /// Stops the service, removes every container and the storage, the CDI spec and the
    /// folder. Called at the process's exit too.
    public func shutdown() {
        service.stop(timeout: 5)
        cleanup.run()
    }

    deinit { shutdown() }

    private static let counter = Counter()
    private static let networkLock = NSLock()

    /// Writes the fixture's default network (`gpuplane-<runID>`, so its iptables chains are its
    /// own too): a bridge `gp<runID>` of its own
    /// with a /24 of 10.89/16 that no interface of the host uses. podman 4.3 has no flag for a
    /// bridge's name and synthesizes its default network unless a file defines it, so the file
    /// is written here; left to podman, every podman on the host would share `podman0`.
    static func createNetwork(runID: String, directory: URL) throws {
        try networkLock.withLock {
            // Taken: the host's addresses, and the subnet of every fixture alive on this host
            // (their network files, which exist before any of their containers does).
            var used = (try? run("/usr/sbin/ip", ["-4", "-o", "addr", "show"])) ?? ""
            let temporary = FileManager.default.temporaryDirectory
            for entry in (try? FileManager.default.contentsOfDirectory(atPath: temporary.path)) ?? []
            where entry.hasPrefix("gpuplane-podman-") {
                let folder = temporary.appendingPathComponent(entry).appendingPathComponent("networks")
                for file in (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? [] where file.hasSuffix(".json") {
                    used += (try? String(contentsOf: folder.appendingPathComponent(file), encoding: .utf8)) ?? ""
                }
            }
            let start = Int(getpid() % 250)
            guard let third = (0..<250).map({ (start + $0) % 250 + 1 }).first(where: { !used.contains("10.89.\($0).") }) else {
                throw PodmanFixtureError(message: "no free 10.89.x.0/24 subnet for the fixture's network")
            }
            let id = (runID + runID + runID + runID + runID + runID + runID + runID).prefix(64)
            let network: [String: Any] = [
                "name": "gpuplane-\(runID)", "id": String(id), "driver": "bridge", "network_interface": "gp\(runID)",
                "created": ISO8601DateFormatter().string(from: Date()),
                "subnets": [["subnet": "10.89.\(third).0/24", "gateway": "10.89.\(third).1"]],
                "ipv6_enabled": false, "internal": false, "dns_enabled": false, "ipam_options": ["driver": "host-local"],
            ]
            let folder = directory.appendingPathComponent("networks")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            try JSONSerialization.data(withJSONObject: network, options: [.prettyPrinted, .sortedKeys])
                .write(to: folder.appendingPathComponent("gpuplane-\(runID).json"))
        }
    }

    static func writeCDISpec(kind: String, gpus: [FakeGPU], to path: String) throws {
        var yaml = "cdiVersion: \"0.5.0\"\nkind: \"\(kind)\"\ndevices:\n"
        for gpu in gpus {
            yaml += """
                  - name: "\(gpu.index)"
                    containerEdits:
                      env:
                        - "GPUPLANE_FAKE_GPU_INDEX=\(gpu.index)"
                        - "GPUPLANE_FAKE_GPU_UUID=\(gpu.uuid)"
                        - "GPUPLANE_FAKE_GPU_\(gpu.index)_UUID=\(gpu.uuid)"

                """
        }
        yaml += "containerEdits: {}\n"
        let folder = (path as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
    }

    /// A rootfs tarball: `/bin/busybox` (static) with a symlink per applet, and the folders
    /// a container expects.
    static func makeRootfsTarball(busybox: String, in directory: URL) throws -> URL {
        let rootfs = directory.appendingPathComponent("rootfs")
        let fm = FileManager.default
        for folder in ["bin", "etc", "tmp", "proc", "sys", "dev", "root"] {
            try fm.createDirectory(at: rootfs.appendingPathComponent(folder), withIntermediateDirectories: true)
        }
        try fm.copyItem(atPath: busybox, toPath: rootfs.appendingPathComponent("bin/busybox").path)
        let applets = try run(busybox, ["--list"]).split(separator: "\n").map(String.init)
        for applet in applets where !applet.isEmpty && applet != "busybox" {
            try? fm.createSymbolicLink(atPath: rootfs.appendingPathComponent("bin/\(applet)").path, withDestinationPath: "busybox")
        }
        try "root:x:0:0:root:/root:/bin/sh\n".write(
            to: rootfs.appendingPathComponent("etc/passwd"), atomically: true, encoding: .utf8)
        try "root:x:0:\n".write(to: rootfs.appendingPathComponent("etc/group"), atomically: true, encoding: .utf8)
        let standIn = rootfs.appendingPathComponent("bin/gpuplane-stand-in-model-server")
        try StandInModelServer.script.write(to: standIn, atomically: true, encoding: .utf8)
        try fm.setAttributes([.posixPermissions: 0o755], ofItemAtPath: standIn.path)
        let tarball = directory.appendingPathComponent("rootfs.tar")
        _ = try run("/bin/tar", ["-C", rootfs.path, "-cf", tarball.path, "."])
        try? fm.removeItem(at: rootfs)
        return tarball
    }

    /// Cleans up after fixtures whose test process died without its exit handlers (SIGKILL,
    /// a crash): their containers, storage, CDI spec and folder. A fixture's folder names its
    /// owner's pid in `owner`.
    static func sweepStaleFixtures() {
        let temporary = FileManager.default.temporaryDirectory
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: temporary.path) else { return }
        for entry in entries where entry.hasPrefix("gpuplane-podman-") {
            let directory = temporary.appendingPathComponent(entry)
            guard let owner = try? String(contentsOf: directory.appendingPathComponent("owner"), encoding: .utf8)
            else { continue }
            let lines = owner.split(separator: "\n").map(String.init)
            guard lines.count == 2, let pid = Int32(lines[0]), kill(pid, 0) != 0, errno == ESRCH else { continue }
            // Its service outlived it; the pid is checked against the folder, in case it was reused.
            if let text = try? String(contentsOf: directory.appendingPathComponent("service.pid"), encoding: .utf8),
                let service = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)),
                let commandLine = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(service)/cmdline")),
                String(decoding: commandLine, as: UTF8.self).contains(directory.path)
            {
                kill(service, SIGKILL)
            }
            PodmanCleanup(executable: executable, directory: directory, cdiSpecPath: lines[1]).run()
        }
    }

    /// Runs a command to its end and returns its output; throws when it exits non-zero.
    static func run(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws -> String {
        let (status, output) = try Command.run(executable, arguments, environment: environment)
        guard status == 0 else {
            throw PodmanFixtureError(message: "\(executable) \(arguments.joined(separator: " ")) exited \(status): \(output)")
        }
        return output
    }
}

/// Raised when the podman fixture cannot start or a podman command fails.
public struct PodmanFixtureError: Error, CustomStringConvertible {
    /// What went wrong.
    public let message: String
    public var description: String { message }
}

/// What undoes a fixture: its containers, storage, CDI spec and folder. Runs once, from
/// `shutdown()` or at the process's exit.
final class PodmanCleanup: @unchecked Sendable {
    let executable: String
    let globals: [String]
    let environment: [String: String]
    let directory: URL
    let cdiSpecPath: String
    private let lock = NSLock()
    private var done = false

    /// The podman flags and environment of the fixture in `directory`: its storage and
    /// configuration live there.
    init(executable: String, directory: URL, cdiSpecPath: String) {
        // A fixture in a network namespace (its `netns` file) runs podman there, while it exists.
        let namespace = (try? String(contentsOf: directory.appendingPathComponent("netns"), encoding: .utf8))
            .map { "/var/run/netns/" + $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        let wrapper = namespace.flatMap { FileManager.default.fileExists(atPath: $0) ? ["--net=\($0)", executable] : nil }
        self.executable = wrapper == nil ? executable : "/usr/bin/nsenter"
        self.globals = (wrapper ?? []) + [
            "--root", directory.appendingPathComponent("root").path,
            "--runroot", directory.appendingPathComponent("runroot").path,
            "--tmpdir", directory.appendingPathComponent("tmp").path,
        ]
        var environment = ["CONTAINERS_CONF": directory.appendingPathComponent("containers.conf").path]
        let registries = directory.appendingPathComponent("registries.conf").path
        if FileManager.default.fileExists(atPath: registries) { environment["CONTAINERS_REGISTRIES_CONF"] = registries }
        self.environment = environment
        self.directory = directory
        self.cdiSpecPath = cdiSpecPath
    }

    @discardableResult
    func podman(_ arguments: [String]) throws -> String {
        try PodmanFixture.run(executable, globals + arguments, environment: environment)
    }

    func run() {
        let first = lock.withLock { () -> Bool in
            defer { done = true }
            return !done
        }
        guard first else { return }
        _ = try? podman(["rm", "--all", "--force", "--time", "0"])
        deleteStrandedRuntimeContainers()
        // Unmounts the storage (overlay mounts its own folder) and deletes it.
        _ = try? podman(["system", "reset", "--force"])
        unlink(cdiSpecPath)
        try? FileManager.default.removeItem(at: directory)
    }

    /// Deletes (`runc delete --force`) the runtime's containers whose bundle lies in this
    /// fixture's folder: those podman no longer knows, so `rm --all` left them. A podman killed
    /// while it started a container (the fault suite kills the service mid-create) can leave
    /// one: runc had created it, its `conmon` ran, but podman's database still said it was
    /// only configured, and a forced remove of a configured container stops nothing. Its
    /// `runc init` and `conmon` then outlived the fixture and its folder. runc keeps its state
    /// in `/run/runc` whatever podman's `--root`, so the runtime is asked, not the storage.
    func deleteStrandedRuntimeContainers() {
        guard let runc = PodmanFixture.runc, let listing = try? PodmanFixture.run(runc, ["list", "--format", "json"]) else { return }
        let stranded = Self.containers(inside: directory.path, runcListing: Data(listing.utf8))
        for id in stranded {
            _ = try? PodmanFixture.run(runc, ["delete", "--force", id])
        }
        if !stranded.isEmpty {
            FileHandle.standardError.write(Data(
                "podman fixture \(directory.lastPathComponent): deleted \(stranded.count) runc container(s) podman had lost: \(stranded.joined(separator: ", "))\n".utf8))
        }
    }

    /// The ids in `runc list --format json` output (`null` when there are none) whose bundle
    /// is `folder` or lies under it.
    static func containers(inside folder: String, runcListing: Data) -> [String] {
        struct Entry: Decodable {
            let id: String
            let bundle: String
        }
        // `try?` flattens: nil for `null` (no containers) and for an answer that is not a list.
        guard let entries = try? JSONDecoder().decode([Entry]?.self, from: runcListing) else { return [] }
        let prefix = folder.hasSuffix("/") ? folder : folder + "/"
        return entries.filter { $0.bundle == folder || $0.bundle.hasPrefix(prefix) }.map(\.id)
    }

    /// At exit, `system()` is safer than Foundation: the same steps as `run()`, by the shell.
    func runAtExit() {
        let first = lock.withLock { () -> Bool in
            defer { done = true }
            return !done
        }
        guard first else { return }
        let conf = environment["CONTAINERS_CONF"] ?? ""
        let registries = environment["CONTAINERS_REGISTRIES_CONF"].map { "CONTAINERS_REGISTRIES_CONF='\($0)' " } ?? ""
        let flags = globals.map { "'\($0)'" }.joined(separator: " ")
        // deleteStrandedRuntimeContainers(), from runc's table (ID PID STATUS BUNDLE …).
        let strandedDeletion = PodmanFixture.runc.map { runc in
            "'\(runc)' list 2>/dev/null | awk -v d='\(directory.path)/' 'index($4, d) == 1 { print $1 }' "
                + "| xargs -r -n 1 '\(runc)' delete --force >/dev/null 2>&1; "
        } ?? ""
        let command =
            "\(registries)CONTAINERS_CONF='\(conf)' '\(executable)' \(flags) rm --all --force --time 0 >/dev/null 2>&1; "
            + strandedDeletion
            + "\(registries)CONTAINERS_CONF='\(conf)' '\(executable)' \(flags) system reset --force >/dev/null 2>&1; "
            + "rm -f '\(cdiSpecPath)'; rm -rf '\(directory.path)'"
        _ = system(command)
    }

    private static let lock = NSLock()
    nonisolated(unsafe) private static var live: [PodmanCleanup] = []
    nonisolated(unsafe) private static var installed = false

    static func register(_ cleanup: PodmanCleanup) {
        lock.withLock {
            live.append(cleanup)
            guard !installed else { return }
            installed = true
            atexit {
                for cleanup in PodmanCleanup.lock.withLock({ PodmanCleanup.live }) { cleanup.runAtExit() }
            }
        }
    }
}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0
    func next() -> Int { lock.withLock { value += 1; return value } }
}

/// `GET path` over a unix socket with HTTP/1.0; the whole answer, or nil when nothing answered.
func unixHTTPGet(socketPath: String, path: String) -> String? {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var timeout = timeval(tv_sec: 2, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(socketPath.utf8)
    guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return nil }
    withUnsafeMutableBytes(of: &addr.sun_path) { raw in
        for (i, b) in bytes.enumerated() { raw[i] = b }
    }
    let connected = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0
        }
    }
    guard connected else { return nil }
    let request = Array("GET \(path) HTTP/1.0\r\nHost: localhost\r\n\r\n".utf8)
    guard write(fd, request, request.count) == request.count else { return nil }
    var answer: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = read(fd, &buffer, buffer.count)
        if n <= 0 { break }
        answer.append(contentsOf: buffer[0..<n])
    }
    return answer.isEmpty ? nil : String(decoding: answer, as: UTF8.self)
}
