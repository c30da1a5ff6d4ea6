import CurlHTTP
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import GPUPlaneSystem

extension ContainerEngine.Client {
    /// Creates a container from `spec` (validated first) and returns its id. Nothing is pulled.
    ///
    /// On Docker it maps to `POST /v1.41/containers/create?name=…`, GPUs given as
    /// `HostConfig.DeviceRequests` (driver `nvidia`, device ids = indices). On Podman it maps to
    /// `POST /v4.0.0/libpod/containers/create`, GPUs given as CDI devices
    /// `<cdiGPUKind>=<index>`: Podman's Docker-compatible create ignores `DeviceRequests`.
    /// Either way the container is unprivileged, in its own network (bridge or none), PID and
    /// IPC namespaces, mounts no host path but a server's weights (read-only at `/weights`,
    /// ``ContainerEngine/ContainerSpec/weightsMount``), has no device but its GPUs, and gets
    /// `NVIDIA_VISIBLE_DEVICES` set by the client, so an image's own value cannot widen it.
    /// It runs with `no-new-privileges` (a setuid binary gains nothing) and without
    /// ``ContainerEngine/droppedCapabilities``, which Docker grants by default and Podman does
    /// not, so both engines leave the same set.
    /// - Throws: ``EngineError/Code/invalidSpec``, ``EngineError/Code/imageMissing``,
    ///   ``EngineError/Code/nameConflict``, or a transport code.
    @discardableResult
    public func create(_ spec: ContainerEngine.ContainerSpec) async throws(EngineError) -> String {
        try spec.validate()
        let info = try await engine()
        var labels = spec.labels
        labels[ContainerEngine.managedLabel.key] = ContainerEngine.managedLabel.value
        let path: String
        let query: [(String, String)]
        let body: Data
        switch info.kind {
        case .podman:
            path = ContainerEngine.libpodPrefix + "/containers/create"
            query = []
            body = try Self.encode(LibpodCreate(spec, labels: labels, cdiKind: configuration.cdiGPUKind))
        case .docker:
            path = ContainerEngine.compatPrefix + "/containers/create"
            query = [("name", spec.name)]
            body = try Self.encode(DockerCreate(spec, labels: labels))
        }
        let response = try await send(.post, path, query: query, body: body, retry: .onlyIfNotSent)
        if response.status == 201 || response.status == 200 {
            return try Self.decode(WireCreated.self, from: response).Id
        }
        throw await createFailure(response, spec: spec, kind: info.kind)
    }

    /// Names the failure of a create. Docker answers 404 for a missing image and 409 for a
    /// taken name; Podman answers 500 for both, so the client asks the engine which it was
    /// instead of reading its message.
    private func createFailure(
        _ response: CurlHTTP.Response, spec: ContainerEngine.ContainerSpec, kind: ContainerEngine.Kind
    ) async -> EngineError {
        let message = Self.engineMessage(response)
        let missing = EngineError(
            code: .imageMissing, message: "image \(spec.image) is not in the engine's store: \(message)",
            httpStatus: response.status, subject: spec.image)
        let conflict = EngineError(
            code: .nameConflict, message: "a container named \(spec.name) exists: \(message)",
            httpStatus: response.status, subject: spec.name)
        if kind == .docker, response.status == 404 { return missing }
        if kind == .docker, response.status == 409 { return conflict }
        if let exists = try? await imageExists(spec.image), !exists { return missing }
        if (try? await inspect(spec.name)) != nil { return conflict }
        return Self.refused(response, subject: spec.name)
    }

    /// Starts a created or exited container; starting a running one does nothing.
    /// Maps to `POST /v1.41/containers/{id}/start`.
    /// - Throws: ``EngineError/Code/notFound``, ``EngineError/Code/startFailed`` (the engine
    ///   could not run it: bad command, a GPU the host lacks), or a transport code.
    public func start(_ container: String) async throws(EngineError) {
        let path = ContainerEngine.compatPrefix + "/containers/" + Self.segment(container) + "/start"
        let response = try await send(.post, path, retry: .idempotent)
        switch response.status {
        case 204, 304: return
        case 404: throw notFound(container, response)
        default:
            throw EngineError(
                code: .startFailed, message: Self.engineMessage(response), httpStatus: response.status,
                body: Self.bodyText(response), subject: container)
        }
    }

    /// Stops a container: SIGTERM (or the image's stop signal), then SIGKILL after
    /// `gracePeriod`. Stopping a stopped container does nothing. The call's deadline is the
    /// grace period plus the configured request timeout.
    /// Maps to `POST /v1.41/containers/{id}/stop?t=…`.
    public func stop(_ container: String, gracePeriod: Duration = .seconds(10)) async throws(EngineError) {
        let seconds = max(0, Int(gracePeriod.wholeSecondsRoundedUp))
        let path = ContainerEngine.compatPrefix + "/containers/" + Self.segment(container) + "/stop"
        let response = try await send(
            .post, path, query: [("t", "\(seconds)")], timeout: gracePeriod + configuration.requestTimeout,
            retry: .idempotent)
        switch response.status {
        case 204, 304: return
        case 404: throw notFound(container, response)
        default: throw Self.refused(response, subject: container)
        }
    }

    /// Removes a container, killing it (SIGKILL, no grace) first if it runs, with its
    /// anonymous volumes. Returns false when there was no such container (removing is
    /// idempotent); true when this call removed it, also when an attempt that got no answer did
    /// and the retry found it gone. Maps to `DELETE /v1.41/containers/{id}?force=true&v=true` on Docker and to
    /// `DELETE /v4.0.0/libpod/containers/{id}?force=true&v=true&timeout=0` on Podman, whose
    /// compat remove would first wait out a 10-second stop.
    ///
    /// An engine that answers 500 (podman's "could not be stopped: given PIDs did not die
    /// within timeout" when the host is too busy to reap the killed processes in time) is asked
    /// twice more, a second and then two apart: a forced remove is idempotent.
    @discardableResult
    public func remove(_ container: String) async throws(EngineError) -> Bool {
        var attempt = 1
        while true {
            do {
                return try await removeOnce(container)
            } catch where error.code == .engineRefused && error.httpStatus == 500 && attempt < 3 {
                do { try await Task.sleep(for: .seconds(attempt)) } catch { throw EngineError(code: .cancelled, message: "cancelled while waiting to remove again", subject: container) }
                attempt += 1
            }
        }
    }

    private func removeOnce(_ container: String) async throws(EngineError) -> Bool {
        let kind = try await engine().kind
        let path: String
        var query = [("force", "true"), ("v", "true")]
        switch kind {
        case .docker:
            path = ContainerEngine.compatPrefix + "/containers/" + Self.segment(container)
        case .podman:
            path = ContainerEngine.libpodPrefix + "/containers/" + Self.segment(container)
            query.append(("timeout", "0"))
        }
        // A retried remove whose earlier attempt got no answer may find the container gone
        // because that attempt removed it: then this call removed it, and says so.
        var earlierAttemptMayHaveRemoved = false
        let response = try await send(.delete, path, query: query, retry: .idempotent) { earlierAttemptMayHaveRemoved = true }
        switch response.status {
        case 200, 204:
            if kind == .podman, let reports = try? JSONDecoder().decode([WireRemoveReport].self, from: response.body),
                let failure = reports.compactMap(\.Err).first(where: { !$0.isEmpty })
            {
                throw EngineError(
                    code: .engineRefused, message: failure, httpStatus: response.status, body: Self.bodyText(response),
                    subject: container)
            }
            return true
        case 404: return earlierAttemptMayHaveRemoved
        default: throw Self.refused(response, subject: container)
        }
    }

    /// What a container is and does. Maps to `GET /v1.41/containers/{id}/json`.
    /// - Throws: ``EngineError/Code/notFound`` when there is no such container.
    public func inspect(_ container: String) async throws(EngineError) -> ContainerEngine.ContainerDetails {
        let path = ContainerEngine.compatPrefix + "/containers/" + Self.segment(container) + "/json"
        let wire = try await call(.get, path, retry: .idempotent, subject: container, as: WireInspect.self)
        return ContainerEngine.ContainerDetails(wire)
    }

    /// The containers, running or not, that carry every one of `labels` (by default: every
    /// container this client manages). Maps to
    /// `GET /v1.41/containers/json?all=true&filters={"label":["k=v",…]}`.
    public func list(
        labels: [String: String] = [ContainerEngine.managedLabel.key: ContainerEngine.managedLabel.value]
    ) async throws(EngineError) -> [ContainerEngine.ContainerSummary] {
        let filters = try Self.labelFilters(labels)
        let rows = try await call(
            .get, ContainerEngine.compatPrefix + "/containers/json", query: [("all", "true"), ("filters", filters)],
            retry: .idempotent, as: [WireSummary].self)
        return rows.map { row in
            ContainerEngine.ContainerSummary(
                id: row.Id,
                name: ContainerEngine.ContainerDetails.trimName(row.Names?.first ?? ""),
                image: row.Image ?? "",
                labels: row.Labels ?? [:],
                status: row.State.map(ContainerEngine.ContainerState.Status.init(engineWord:)) ?? .unknown,
                createdAt: row.Created.map { Date(timeIntervalSince1970: TimeInterval($0)) })
        }
    }

    func notFound(_ container: String, _ response: CurlHTTP.Response) -> EngineError {
        EngineError(
            code: .notFound, message: "no container \(container)", httpStatus: response.status,
            body: Self.bodyText(response), subject: container)
    }
}

extension ContainerEngine {
    /// Capabilities every container is created without: raw sockets (spoofed packets on the
    /// pod network), device nodes and audit writes. No inference server needs them; Docker's
    /// default set has them, Podman's (4.x) does not, and an operator's containers.conf
    /// cannot add them back.
    public static let droppedCapabilities = ["AUDIT_WRITE", "MKNOD", "NET_RAW"]
}

/// `NVIDIA_VISIBLE_DEVICES` for a container: its GPU indices, or `void` (no GPU, and the
/// NVIDIA hook, if any, does nothing).
func nvidiaVisibleDevices(_ indices: [Int], cdi: Bool) -> String {
    cdi || indices.isEmpty ? "void" : indices.map(String.init).joined(separator: ",")
}

/// Docker's `POST /containers/create` body, as far as the spec can fill it.
struct DockerCreate: Encodable {
    struct Empty: Encodable {}
    struct PortBinding: Encodable {
        var HostIp: String
        var HostPort: String
    }
    struct DeviceRequest: Encodable {
        var Driver: String
        var DeviceIDs: [String]
        var Capabilities: [[String]]
    }
    struct RestartPolicyBody: Encodable {
        var Name: String
    }
    struct HostConfigBody: Encodable {
        var Privileged = false
        var NetworkMode: String
        var PidMode = ""
        var IpcMode = "private"
        var PortBindings: [String: [PortBinding]]
        var Memory: Int64?
        var MemorySwap: Int64?
        /// CPU limit in billionths of a CPU (``ContainerEngine/ContainerSpec/cpuLimitMilli``).
        var NanoCpus: Int64?
        /// `/dev/shm` in bytes (``ContainerEngine/ContainerSpec/shmSizeBytes``); nil: the default.
        var ShmSize: Int64?
        var DeviceRequests: [DeviceRequest]
        var Devices: [String] = []
        var Binds: [String] = []
        var CapAdd: [String] = []
        var CapDrop = ContainerEngine.droppedCapabilities
        var SecurityOpt = ["no-new-privileges"]
        var RestartPolicy = RestartPolicyBody(Name: "no")
    }
    var Image: String
    var Cmd: [String]?
    var Entrypoint: [String]?
    var Env: [String]
    var Labels: [String: String]
    var ExposedPorts: [String: Empty]
    var HostConfig: HostConfigBody

    init(_ spec: ContainerEngine.ContainerSpec, labels: [String: String]) {
        Image = spec.image
        Cmd = spec.command
        Entrypoint = spec.entrypoint
        var env = spec.environment
        env["NVIDIA_VISIBLE_DEVICES"] = nvidiaVisibleDevices(spec.gpuIndices, cdi: false)
        Env = env.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        Labels = labels
        var exposed: [String: Empty] = [:]
        var bindings: [String: [PortBinding]] = [:]
        for port in spec.ports {
            let key = "\(port.containerPort)/\(port.protocol.rawValue)"
            exposed[key] = Empty()
            bindings[key, default: []].append(PortBinding(HostIp: port.hostIP, HostPort: "\(port.hostPort)"))
        }
        ExposedPorts = exposed
        HostConfig = HostConfigBody(
            NetworkMode: spec.network == .bridge ? spec.networkName ?? spec.network.rawValue : spec.network.rawValue, PortBindings: bindings, Memory: spec.memoryLimitBytes,
            MemorySwap: spec.memoryLimitBytes,
            NanoCpus: spec.cpuLimitMilli.map { Int64($0) * 1_000_000 },
            ShmSize: spec.shmSizeBytes,
            DeviceRequests: spec.gpuIndices.isEmpty
                ? []
                : [DeviceRequest(Driver: "nvidia", DeviceIDs: spec.gpuIndices.map(String.init), Capabilities: [["gpu"]])])
        if let weights = spec.weightsMount { HostConfig.Binds = ["\(weights):\(ServingWeights.mountPath):ro"] }
    }
}

/// Podman's `POST /libpod/containers/create` body (a SpecGenerator), as far as the spec can
/// fill it.
struct LibpodCreate: Encodable {
    struct Namespace: Encodable {
        var nsmode: String
    }
    struct PortMapping: Encodable {
        var container_port: Int
        var host_port: Int
        var host_ip: String
        var `protocol`: String
    }
    struct Device: Encodable {
        var path: String
    }
    struct Memory: Encodable {
        var limit: Int64
        var swap: Int64
    }
    struct CPU: Encodable {
        var quota: Int64
        var period: UInt64
    }
    struct Resources: Encodable {
        var memory: Memory?
        var cpu: CPU?
    }
    var name: String
    var image: String
    var command: [String]?
    var entrypoint: [String]?
    var env: [String: String]
    var labels: [String: String]
    var portmappings: [PortMapping]
    var devices: [Device]
    var resource_limits: Resources?
    var privileged = false
    var netns: Namespace
    var pidns = Namespace(nsmode: "private")
    var ipcns = Namespace(nsmode: "private")
    /// `/dev/shm` in bytes (``ContainerEngine/ContainerSpec/shmSizeBytes``); nil: the default.
    var shm_size: Int64?
    /// A bind mount (only a server's weights, read-only).
    struct Mount: Encodable {
        var destination: String
        var type = "bind"
        var source: String
        var options = ["ro", "rbind"]
    }
    var mounts: [Mount] = []
    var cap_add: [String] = []
    var cap_drop = ContainerEngine.droppedCapabilities
    var no_new_privileges = true
    /// The named network to join (``ContainerEngine/ContainerSpec/networkName``).
    var Networks: [String: [String: String]]?

    init(_ spec: ContainerEngine.ContainerSpec, labels: [String: String], cdiKind: String) {
        name = spec.name
        image = spec.image
        command = spec.command
        entrypoint = spec.entrypoint
        var env = spec.environment
        env["NVIDIA_VISIBLE_DEVICES"] = nvidiaVisibleDevices(spec.gpuIndices, cdi: true)
        self.env = env
        self.labels = labels
        portmappings = spec.ports.map {
            PortMapping(
                container_port: $0.containerPort, host_port: $0.hostPort, host_ip: $0.hostIP,
                protocol: $0.protocol.rawValue)
        }
        devices = spec.gpuIndices.map { Device(path: "\(cdiKind)=\($0)") }
        let cpu = spec.cpuLimitMilli.map {
            CPU(quota: Int64($0) * Int64(ContainerEngine.ContainerSpec.cpuPeriodMicroseconds) / 1000,
                period: UInt64(ContainerEngine.ContainerSpec.cpuPeriodMicroseconds))
        }
        let memory = spec.memoryLimitBytes.map { Memory(limit: $0, swap: $0) }
        resource_limits = cpu == nil && memory == nil ? nil : Resources(memory: memory, cpu: cpu)
        netns = Namespace(nsmode: spec.network.rawValue)
        shm_size = spec.shmSizeBytes
        if let weights = spec.weightsMount { mounts = [Mount(destination: ServingWeights.mountPath, source: weights)] }
        if spec.network == .bridge, let network = spec.networkName { Networks = [network: [:]] }
    }
}
