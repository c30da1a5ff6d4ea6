import CurlHTTP
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import Logging

/// What the reconciler needs to know about its node.
public struct ReconcilerSettings: Sendable {
    /// The node's name.
    public var node: String
    /// The gateway's base URL, for `NXL_INFERENCE_URL`.
    public var gatewayBaseURL: String
    /// How long a container gets between SIGTERM and SIGKILL when it must stop.
    public var stopGracePeriod: Duration
    /// The first pause before a crashed container is restarted; it doubles per restart.
    public var restartBackoff: Duration
    /// The longest pause between restarts; a container that ran this long without crashing
    /// gets ``restartBackoff`` again.
    public var restartBackoffMax: Duration
    /// The node's address: model servers are published on it (loopback when nil).
    public var address: String?
    /// The host ports model servers are published on.
    public var modelServerPorts: ClosedRange<Int>
    /// How often a model server that is not ready has its `/v1/models` probed.
    public var readinessProbeInterval: Duration
    /// The pause after a failed image pull before the next; it doubles per failure.
    public var imagePullBackoff: Duration
    /// The cap of that pause.
    public var imagePullBackoffMax: Duration
    /// The deadline of one image pull, from its start to the image in the store.
    public var imagePullTimeout: Duration
    /// How often a pull's progress is reported in the replica's status at most.
    public var imagePullProgressInterval: Duration
    /// The CPU and memory limits of containers (``ContainerSizing``); nil sets none.
    public var sizing: ContainerSizing? = nil

    /// Makes settings.
    public init(
        node: String, gatewayBaseURL: String, stopGracePeriod: Duration = .seconds(10),
        restartBackoff: Duration = .seconds(1), restartBackoffMax: Duration = .seconds(60), address: String? = nil,
        modelServerPorts: ClosedRange<Int> = 20000...20999, readinessProbeInterval: Duration = .seconds(1),
        imagePullBackoff: Duration = .seconds(10), imagePullBackoffMax: Duration = .seconds(300),
        imagePullTimeout: Duration = .seconds(3600), imagePullProgressInterval: Duration = .seconds(2)
    ) {
        self.imagePullBackoff = imagePullBackoff
        self.imagePullBackoffMax = imagePullBackoffMax
        self.imagePullTimeout = imagePullTimeout
        self.imagePullProgressInterval = imagePullProgressInterval
        self.address = address
        self.modelServerPorts = modelServerPorts
        self.readinessProbeInterval = readinessProbeInterval
        self.node = node
        self.gatewayBaseURL = gatewayBaseURL
        self.stopGracePeriod = stopGracePeriod
        self.restartBackoff = restartBackoff
        self.restartBackoffMax = restartBackoffMax
    }
}

/// What one reconcile pass found.
public struct ReconcileSummary: Sendable, Hashable {
    /// Replicas that should run here.
    public var wanted: Int
    /// Their containers that run.
    public var running: Int
    /// When the next pass must run at the latest (a restart or retry is due).
    public var nextDue: ContinuousClock.Instant?
}

/// Makes the node's containers match the replicas and model servers bound to it.
///
/// Fed by the node's watch of its replicas and model servers (``apply(_:)``) and GPU health
/// (``setHealth(_:)``), each ``pass()`` lists this node's managed containers and then: stops (with
/// the grace period) and removes what nothing wants — unbound, deleted, preempted; adopts running
/// containers whose replica and spec hash match, without restarting them; replaces containers whose
/// spec hash differs; creates and starts what is missing; restarts exited containers after an
/// exponential backoff; and reports each replica's status to the api-server when it changed, naming
/// the binding it observed (``ReplicaStatus/observedBinding``).
///
/// A GPU is used by one container at a time, whatever the bindings say (a late watch, or a
/// scheduler that thought a GPU free): no container is created on GPUs that another container
/// of this node claims (one that exists for another replica, or is still being stopped), nor
/// started while another container runs on them or is still being stopped there; the replica
/// waits in `starting` (``ReplicaStatus/Reason/waitingForGPU``) instead. Only containers of one
/// ``ContainerPlan/gpuSharingGroup`` share a GPU (Mode 3 servers and their replicas; a Mode 2
/// server and its replica). A replica moved away and back
/// (drained, evicted and placed here again) waits likewise for its previous container to be
/// stopped and removed (``ReplicaStatus/Reason/waitingForPreviousContainer``) rather than
/// colliding with its name; the end of every stop runs a pass (the `retired` hook).
///
/// A model server is one more container: the serving image on its GPU, published on a host
/// port of ``ReconcilerSettings/modelServerPorts``. It is reported ready only once its
/// `/v1/models` answers (probed every ``ReconcilerSettings/readinessProbeInterval`` until then,
/// and on every pass after; three failures in a row make it not ready again).
actor Reconciler {
    let settings: ReconcilerSettings
    let engine: ContainerEngine.Client
    let api: NodeAPI.Client
    let logger: Logger
    let clock = ContinuousClock()

    private var desired: [String: Replica] = [:]
    private var listed = false
    private var servers: [String: ModelServer] = [:]
    private var serversListed = false
    private let serving: ServingEndpoint
    private let http: CurlHTTP.Client
    private var gpus: [GPUDevice] = []
    private var health = GPUHealthSnapshot(gpus: [])
    private var tracked: [String: Tracked] = [:]
    /// Containers being stopped and removed in the background, by id.
    private var retiring: [String: Retiring] = [:]
    /// Called when a background stop ends, so that a pass runs for whoever waited on it; and
    /// when an image pull progressed or ended.
    private let retiredHook: @Sendable () -> Void
    /// Where a replica's registry credentials come from, when its image must be pulled.
    private let registryLogins: RegistryLoginSource?
    /// The node's pod network, when it runs one: application pods join it, and each pass tells
    /// it which run here.
    let podNetwork: PodNetwork?
    /// The image pulls under way, by image and tenant.
    private var pulls: [String: ImagePullJob] = [:]
    /// The node's weights cache, when it has one (``WeightsCache``): model servers and
    /// deployment instances with weights get them fetched and mounted (see Reconciler+Weights.swift).
    let weightsCache: WeightsCache?

    /// A container being stopped: whose it was and the GPUs it still uses until it is gone.
    private struct Retiring {
        var key: String
        var gpus: GPUClaim
    }

    /// The GPUs a container uses.
    private struct GPUClaim {
        /// The indices; nil when unknown (a container from before ``ContainerPlan/gpusLabel``
        /// that no plan explains): then it is taken to use every GPU.
        var gpus: Set<Int>?
        /// The containers it may share them with (``ContainerPlan/gpuSharingGroup``).
        var group: String?

        /// Whether this and `other` cannot run on the GPUs they have at once.
        func collides(with other: GPUClaim) -> Bool {
            if let group, group == other.group { return false }
            switch (gpus, other.gpus) {
            case let (mine?, theirs?): return !mine.isDisjoint(with: theirs)
            case let (mine?, nil): return !mine.isEmpty
            case let (nil, theirs?): return !theirs.isEmpty
            case (nil, nil): return true
            }
        }
    }

    /// Another container of this node, as one that could keep a GPU from a replica.
    private struct GPUUser {
        var key: String
        var claim: GPUClaim
        /// Running, paused or restarting (not merely created or exited).
        var running: Bool
        /// Being stopped and removed.
        var retiring: Bool
    }

    /// What the reconciler remembers of one wanted replica.
    struct Tracked {
        var containerID: String?
        var restarts: Int
        var backoff: Duration
        /// When the next create/start/restart may be tried; nil: at once.
        var nextAttempt: ContinuousClock.Instant?
        var runningSince: ContinuousClock.Instant?
        /// The status last reported (or read from the api-server).
        var reported: ReplicaStatus
        /// The status computed by the last pass.
        var current: ReplicaStatus
        /// A model server's host port, once its container exists.
        var hostPort: Int?
        /// Whether a model server's `/v1/models` answered (and has not failed three times since).
        var ready = false
        var probeFailures = 0
        var lastProbe: ContinuousClock.Instant?
        /// The model-server report last sent (or read from the api-server).
        var reportedServer: ModelServer.Report?
        /// Its image's pull and pull failures.
        var pull = ImagePullState()
        /// Its weights' fetch, failures and load timing (Reconciler+Weights.swift).
        var weights = WeightsProgress()
    }

    /// What runs in one container here.
    enum Workload {
        case replica(Replica)
        case server(ModelServer)

        var status: ReplicaStatus {
            switch self {
            case .replica(let replica): return replica.status
            case .server(let server): return server.status.container ?? ReplicaStatus()
            }
        }
    }

    /// Makes a reconciler; `retired` is called each time a background stop and removal ends,
    /// and when an image pull progressed or ended. `registryLogins` gives a replica's registry
    /// credentials when its image must be pulled (none: pulls go without credentials).
    init(
        settings: ReconcilerSettings, engine: ContainerEngine.Client, api: NodeAPI.Client, logger: Logger,
        registryLogins: RegistryLoginSource? = nil, podNetwork: PodNetwork? = nil, weightsCache: WeightsCache? = nil,
        retired: @escaping @Sendable () -> Void = {}
    ) {
        self.weightsCache = weightsCache
        weightsCache?.setHook(retired)
        self.podNetwork = podNetwork
        self.retiredHook = retired
        self.registryLogins = registryLogins
        self.settings = settings
        self.engine = engine
        self.api = api
        self.logger = logger
        self.serving = ServingEndpoint(address: settings.address, ports: settings.modelServerPorts)
        self.http = api.http
    }

    /// The labels of every container this reconciler manages.
    var ownLabels: [String: String] {
        [ContainerEngine.managedLabel.key: ContainerEngine.managedLabel.value, ContainerPlan.nodeLabel: settings.node]
    }

    /// Whether a replica bound here should run.
    func shouldRun(_ replica: Replica) -> Bool {
        replica.binding?.node == settings.node && replica.status.phase != .preempted && replica.status.phase != .terminating
    }

    private func shouldRun(_ workload: Workload) -> Bool {
        switch workload {
        case .replica(let replica): return shouldRun(replica)
        case .server(let server): return server.binding?.node == settings.node
        }
    }

    /// Everything bound here, by key.
    private var workloads: [String: Workload] {
        var all = desired.mapValues { Workload.replica($0) }
        for (key, server) in servers { all[key] = .server(server) }
        return all
    }

    /// Why a container of ours must go.
    private func retireReason(_ workload: Workload?) -> String {
        switch workload {
        case nil: return "nothing bound here wants it"
        case .replica(let replica): return "replica is \(replica.status.phase.rawValue)"
        case .server: return "model server is no longer bound here"
        }
    }

    /// Takes a change from the replica watch.
    func apply(_ change: ReplicaChange) {
        switch change {
        case .listed(let replicas):
            desired = Dictionary(replicas.map { (ContainerPlan.key($0), $0) }, uniquingKeysWith: { $1 })
            listed = true
        case .upserted(let replica):
            desired[ContainerPlan.key(replica)] = replica
        case .deleted(let replica):
            desired[ContainerPlan.key(replica)] = nil
        }
    }

    /// Takes a change from the model-server watch.
    func apply(_ change: ModelServerChange) {
        switch change {
        case .listed(let list):
            servers = Dictionary(list.map { (ContainerPlan.key($0), $0) }, uniquingKeysWith: { $1 })
            serversListed = true
        case .upserted(let server):
            servers[ContainerPlan.key(server)] = server
        case .deleted(let server):
            servers[ContainerPlan.key(server)] = nil
        }
    }

    /// Takes the node's GPUs and their latest health.
    func setHealth(_ snapshot: GPUHealthSnapshot, gpus: [GPUDevice]) {
        health = snapshot
        self.gpus = gpus
    }

    /// Whether the first lists of replicas and model servers have arrived (nothing is removed before).
    var hasListed: Bool { listed && serversListed }

    /// One pass. Throws when the engine cannot list containers (an unhealthy pass); before the
    /// first list of replicas it only checks that the engine answers.
    func pass() async throws(EngineError) -> ReconcileSummary {
        let containers = try await engine.list(labels: ownLabels)
        // Nothing is stopped, started or adopted before the first lists arrived.
        guard hasListed else { return ReconcileSummary(wanted: 0, running: 0, nextDue: nil) }
        let all = workloads
        let wanted = all.filter { shouldRun($0.value) }
        tracked = tracked.filter { wanted[$0.key] != nil }
        // The plans first: they tell the GPUs of containers made before the GPU label.
        var plans: [String: ContainerPlan] = [:]
        var unplannable: [String: ModelServer] = [:]
        for (key, workload) in wanted {
            switch workload {
            case .replica(let replica):
                plans[key] = ContainerPlan(
                    replica: replica, node: settings.node, gatewayBaseURL: settings.gatewayBaseURL,
                    podNetwork: podNetwork?.networkName, limits: settings.sizing?.limits(for: replica))
            case .server(let server):
                if let plan = ContainerPlan(server: server, node: settings.node, limits: settings.sizing?.limits(for: server)) { plans[key] = plan } else { unplannable[key] = server }
            }
        }
        markWeightsInUse(containers: containers, plans: plans)
        var mine: [String: [ContainerEngine.ContainerSummary]] = [:]
        var usedPorts = Set<Int>()
        for container in containers {
            if let port = container.labels[ContainerPlan.hostPortLabel].flatMap(Int.init) { usedPorts.insert(port) }
            guard retiring[container.id] == nil else { continue }
            let key = container.labels[ContainerPlan.replicaLabel] ?? ""
            if let workload = all[key], shouldRun(workload) {
                mine[key, default: []].append(container)
            } else {
                retire(container, key: key, claim: claim(of: container, plans: plans), why: retireReason(all[key]))
            }
        }
        // Every container of this node and the GPUs it claims, by id: kept up to date through the pass.
        var users: [String: GPUUser] = [:]
        for container in containers {
            let running = Self.usesDevices(container.status)
            let stopping = retiring[container.id] != nil
            users[container.id] = GPUUser(
                key: container.labels[ContainerPlan.replicaLabel] ?? "", claim: retiring[container.id]?.gpus ?? claim(of: container, plans: plans),
                running: running, retiring: stopping)
        }

        var summary = ReconcileSummary(wanted: wanted.count, running: 0, nextDue: nil)
        let podNetworkReady = await podNetwork?.isPrepared ?? true
        var localPods: [LocalPod] = []
        for (key, workload) in wanted.sorted(by: { $0.key < $1.key }) {
            if case .server(let server) = workload, unplannable[key] != nil {
                var entry = tracked[key] ?? Self.fresh(workload, backoff: settings.restartBackoff)
                entry.current = ReplicaStatus(
                    phase: .failed, message: "model server \(server.metadata.name) names no serving image (spec.serving); the scheduler's catalog has no entry for \(server.spec.slug)")
                tracked[key] = await report(entry, key: key, workload: workload)
                continue
            }
            guard let plan = plans[key] else { continue }
            if !podNetworkReady, let network = plan.spec.networkName, (mine[key] ?? []).isEmpty, case .replica(let replica) = workload {
                // Its container would fail to join a network that does not exist yet; checked
                // again shortly (the pod network's preparation retries on its own).
                var entry = tracked[key] ?? Self.fresh(workload, backoff: settings.restartBackoff)
                var status = entry.current
                status.phase = .starting
                status.reason = nil
                status.message = "waiting for the node's pod network \(network) to be created"
                status.observedBinding = replica.binding
                entry.current = status
                let due = clock.now + .milliseconds(500)
                summary.nextDue = min(summary.nextDue ?? due, due)
                tracked[key] = await report(entry, key: key, workload: workload)
                continue
            }
            var candidates = mine[key] ?? []
            for stale in candidates where stale.labels[ContainerPlan.specHashLabel] != plan.specHash {
                replicaLogger(key).info(
                    "replacing container whose spec changed",
                    metadata: ["container": "\(stale.id.prefix(12))", "old": "\(stale.labels[ContainerPlan.specHashLabel] ?? "")", "new": "\(plan.specHash)"])
                await stopAndRemove(stale.id, key: key)
                users[stale.id] = nil
            }
            candidates.removeAll { $0.labels[ContainerPlan.specHashLabel] != plan.specHash }
            candidates.sort { ($0.status == .running ? 0 : 1, $0.createdAt ?? .distantPast) < ($1.status == .running ? 0 : 1, $1.createdAt ?? .distantPast) }
            for extra in candidates.dropFirst() {
                retire(extra, key: key, claim: claim(of: extra, plans: plans), why: "a second container for one replica")
                users[extra.id]?.retiring = true
            }
            let candidate = candidates.first
            let wait = waitReason(key: key, plan: plan, container: candidate, users: users)
            var entry = tracked[key] ?? Self.fresh(workload, backoff: settings.restartBackoff)
            var status = await ensure(
                &entry, key: key, plan: plan, container: candidate, wait: wait, workload: workload, usedPorts: &usedPorts)
            if let id = status.containerID, status.phase == .running {
                users[id] = GPUUser(key: key, claim: GPUClaim(gpus: Set(plan.spec.gpuIndices), group: plan.gpuSharingGroup), running: true, retiring: false)
            }
            if status.phase == .running { summary.running += 1 }
            if plan.publishedPort != nil {
                if let due = await probe(&entry, &status, key: key, tcpOnly: plan.servingPort == nil) {
                    summary.nextDue = min(summary.nextDue ?? due, due)
                }
                if case .replica = workload {
                    // A serving replica (a deployment instance) and a pod with a path (its
                    // ingress port) carry their readiness themselves.
                    status.ready = entry.ready
                    status.endpoint = entry.hostPort.map { serving.url(port: $0) }
                }
            }
            if let podNetwork, case .replica(let replica) = workload, replica.spec.owner.kind == .application,
                status.phase == .running, let id = status.containerID, let endpoint = await podNetwork.endpoint(of: id)
            {
                // Its address on the pod network, for the other pods' names and rules.
                status.podIP = endpoint.ip
                localPods.append(LocalPod(
                    group: "\(replica.metadata.tenant)/\(replica.spec.owner.name)", pod: replica.spec.role, containerID: id,
                    ip: endpoint.ip, hostsPath: endpoint.hostsPath))
            }
            if plan.weights != nil || plan.servingPort != nil {
                status.loading = await loadingStatus(&entry, status, plan: plan, key: key)
            }
            if case .replica(let replica) = workload {
                // Only the agent's own phases are reported, for the binding this pass acted on.
                if !status.phase.isReportedByNodeAgents { status.phase = .starting }
                status.observedBinding = replica.binding
            }
            entry.current = status
            // A waiting replica is woken by what it waits for (a stop ending, an exit, a watch
            // change), not by its past-due retry time.
            if let next = entry.nextAttempt, wait == nil || status.reason != wait?.reason {
                summary.nextDue = min(summary.nextDue ?? next, next)
            }
            entry = await report(entry, key: key, workload: workload)
            tracked[key] = entry
        }
        await podNetwork?.setLocal(localPods)
        return summary
    }

    private static func fresh(_ workload: Workload, backoff: Duration) -> Tracked {
        var entry = Tracked(
            containerID: nil, restarts: workload.status.restarts, backoff: backoff, nextAttempt: nil, runningSince: nil,
            reported: workload.status, current: workload.status)
        if case .server(let server) = workload {
            entry.reportedServer = ModelServer.Report(
                ready: server.status.ready, endpoint: server.status.endpoint, container: workload.status)
        }
        return entry
    }

    // MARK: Model server readiness

    /// Probes a running model server's `/v1/models` when due (with `tcpOnly`, a pod's ingress
    /// port: a TCP connect, ``TCPProbe``); returns when the next probe is due while it is not
    /// ready. A server that is not running is not ready.
    private func probe(
        _ entry: inout Tracked, _ status: inout ReplicaStatus, key: String, tcpOnly: Bool = false
    ) async -> ContinuousClock.Instant? {
        guard status.phase == .running, let port = entry.hostPort else {
            entry.ready = false
            entry.probeFailures = 0
            return nil
        }
        let now = clock.now
        let interval = settings.readinessProbeInterval
        if !entry.ready, let last = entry.lastProbe, now - last < interval {
            status.message = entry.current.message
            return last + interval
        }
        entry.lastProbe = now
        let url = tcpOnly ? "tcp://\(serving.probeHost):\(port)" : serving.url(port: port) + "/v1/models"
        var answered: Bool
        var why: String
        if tcpOnly {
            (answered, why) = await TCPProbe.connect(host: serving.probeHost, port: port, timeout: .seconds(1))
        } else {
            switch await http.performResult(CurlHTTP.Request(url: url, timeout: .seconds(2), connectTimeout: .seconds(1))) {
            case .success(let response):
                answered = response.isSuccess
                why = "HTTP \(response.status)"
            case .failure(let error):
                answered = false
                why = error.message
            }
        }
        let log = replicaLogger(key)
        if !answered {
            log.debug("model server probe failed", metadata: ["url": "\(url)", "error": "\(why)", "failures": "\(entry.probeFailures + 1)"])
        }
        if answered {
            if !entry.ready {
                log.notice(tcpOnly ? "ingress port accepts connections; ready" : "model server ready", metadata: ["endpoint": "\(serving.url(port: port))"])
            }
            entry.ready = true
            entry.probeFailures = 0
        } else {
            entry.probeFailures += 1
            if entry.ready && entry.probeFailures >= 3 {
                entry.ready = false
                log.warning("stopped answering \(url)", metadata: ["endpoint": "\(serving.url(port: port))"])
            }
        }
        if !entry.ready {
            status.message = tcpOnly ? "waiting for \(url) to accept connections" : "waiting for \(url) to answer"
            return now + interval
        }
        return nil
    }

    // MARK: One replica

    /// Why `plan` may not get a container now (created, or started again): its previous
    /// container is still being stopped, or another container claims one of its GPUs. Nil when
    /// nothing stands in the way.
    ///
    /// A new container waits for any other that exists on its GPUs (an exited one is started
    /// again by its own replica); an existing one waits only for others that run or are being
    /// stopped there, so two exited containers never wait on each other.
    private func waitReason(
        key: String, plan: ContainerPlan, container: ContainerEngine.ContainerSummary?, users: [String: GPUUser]
    ) -> Wait? {
        if container == nil, let previous = retiring.first(where: { $0.value.key == key }) {
            return Wait(
                reason: .waitingForPreviousContainer,
                message: "waiting for its previous container \(previous.key.prefix(12)) on node \(settings.node) to be stopped and removed",
                blocker: key)
        }
        let mine = GPUClaim(gpus: Set(plan.spec.gpuIndices), group: plan.gpuSharingGroup)
        guard mine.gpus?.isEmpty == false else { return nil }
        let blockers = users.filter { id, user in
            id != container?.id && (container == nil || user.running || user.retiring)
                && (user.key != key || user.retiring) && mine.collides(with: user.claim)
        }
        guard let (_, blocker) = blockers.sorted(by: { $0.key < $1.key }).first else { return nil }
        let gpus = (blocker.claim.gpus.map { mine.gpus?.intersection($0) ?? $0 } ?? mine.gpus ?? []).sorted()
        let which = gpus.count == 1 ? "GPU \(gpus[0])" : "GPUs \(gpus.map(String.init).joined(separator: ","))"
        let how = blocker.retiring ? "is still being stopped" : blocker.running ? "is running" : "exists"
        return Wait(
            reason: .waitingForGPU,
            message: "\(which) on node \(settings.node) is still in use: another container there \(how); waiting for it to be released",
            blocker: blocker.key)
    }

    /// What keeps a replica's container from being created or started.
    private struct Wait {
        var reason: ReplicaStatus.Reason
        var message: String
        /// The key of the container waited for (logged, never reported: it may be another tenant's).
        var blocker: String
    }

    private func ensure(
        _ entry: inout Tracked, key: String, plan: ContainerPlan, container: ContainerEngine.ContainerSummary?,
        wait: Wait?, workload: Workload, usedPorts: inout Set<Int>
    ) async -> ReplicaStatus {
        let log = replicaLogger(key)
        let now = clock.now
        let sick = unhealthyGPUs(plan.spec.gpuIndices)
        let gpuMessage = sick.isEmpty ? nil : Self.gpuMessage(sick)
        var status = ReplicaStatus(phase: .starting, containerID: container?.id ?? entry.containerID, restarts: entry.restarts)
        if let container { entry.hostPort = container.labels[ContainerPlan.hostPortLabel].flatMap(Int.init) }

        if let container, container.status == .running {
            if entry.containerID != container.id && entry.runningSince == nil && tracked[key] == nil {
                log.info("adopted running container", metadata: ["container": "\(container.id.prefix(12))"])
            }
            entry.containerID = container.id
            if entry.runningSince == nil { entry.runningSince = now }
            if let since = entry.runningSince, now - since >= settings.restartBackoffMax { entry.backoff = settings.restartBackoff }
            entry.nextAttempt = nil
            status.containerID = container.id
            status.phase = .running
            if let gpuMessage {
                status.phase = .failed
                status.message = gpuMessage
                status.reason = .gpuUnhealthy
            }
            return status
        }
        entry.runningSince = nil
        if let gpuMessage {
            status.phase = .failed
            status.message = gpuMessage + "; not starting its container"
            status.reason = .gpuUnhealthy
            return status
        }

        if let container {
            // Created but never started, or exited: start it again once its backoff passed.
            entry.containerID = container.id
            let details: ContainerEngine.ContainerDetails
            do {
                details = try await engine.inspect(container.id)
            } catch {
                log.warning("cannot inspect container", metadata: ["container": "\(container.id.prefix(12))", "error": "\(error)"])
                return entry.current
            }
            let exited = details.state.status != .created
            let exitText: String
            if details.state.oomKilled {
                exitText = "container was killed for running out of memory (OOMKilled, exit code \(details.state.exitCode))"
            } else if let error = details.state.error, details.state.startedAt == nil {
                exitText = "container could not start: \(error)"
            } else {
                exitText = "container exited with code \(details.state.exitCode)"
            }
            if exited, entry.nextAttempt == nil {
                entry.nextAttempt = now + entry.backoff
                log.warning(
                    "container exited; restarting after backoff",
                    metadata: ["container": "\(container.id.prefix(12))", "exitCode": "\(details.state.exitCode)",
                               "oomKilled": "\(details.state.oomKilled)", "backoff": "\(entry.backoff)"])
            }
            if let next = entry.nextAttempt, now < next {
                status.phase = .failed
                status.exitCode = exited ? details.state.exitCode : nil
                status.message = exited
                    ? "\(exitText); restart \(entry.restarts + 1) after a \(Self.text(entry.backoff)) backoff"
                    : entry.current.message
                status.reason = exited ? .crashLoopBackOff : entry.current.reason
                return status
            }
            if let wait {
                status.exitCode = exited ? details.state.exitCode : nil
                return waiting(entry, status, wait, log: log)
            }
            do {
                try await engine.start(container.id)
            } catch {
                return failedAttempt(&entry, status, "container could not start: \(error.message)", log: log)
            }
            if exited {
                entry.restarts += 1
                AgentMetrics.containerRestarts.increment()
            }
            entry.backoff = min(entry.backoff * 2, settings.restartBackoffMax)
            entry.nextAttempt = nil
            entry.runningSince = now
            entry.weights.started(at: now)
            log.info("container started", metadata: ["container": "\(container.id.prefix(12))", "restarts": "\(entry.restarts)"])
            status.phase = .running
            status.restarts = entry.restarts
            return status
        }

        // No container: create and start one, unless its image is being pulled or a failed
        // pull's backoff runs, a failed attempt's backoff still runs, or its GPUs (or its
        // name) are not free yet.
        var weightsEntry: WeightsEntry?
        if let weights = plan.weights {
            switch await weightsGate(&entry, status, weights, workload: workload, log: log) {
            case .waiting(let waiting): return waiting
            case .ready(let found): weightsEntry = found
            }
        }
        if let pulling = imagePull(&entry, status, image: plan.spec.image, log: log) { return pulling }
        if let next = entry.nextAttempt, now < next { return entry.current }
        if let wait { return waiting(entry, status, wait, log: log) }
        var spec = plan.spec
        if let weightsEntry {
            spec.weightsMount = weightsEntry.path
            spec.labels[ContainerPlan.weightsLabel] = weightsEntry.address
            weightsCache?.markUsed(weightsEntry.address)
        }
        if case .replica(let replica) = workload, SecretEnvironment.needed(replica) {
            // Its secret vars' values, into the engine spec only (SecretEnvironment).
            switch await SecretEnvironment.values(for: replica, api: api) {
            case .success(let values): SecretEnvironment.add(values, to: &spec)
            case .failure(let failure):
                var failed = failedAttempt(&entry, status, failure.message, log: log)
                failed.reason = .createContainerConfigError
                return failed
            }
        }
        if let containerPort = plan.publishedPort {
            guard let port = serving.pick(excluding: usedPorts) else {
                return failedAttempt(
                    &entry, status,
                    "no free host port in \(settings.modelServerPorts.lowerBound)-\(settings.modelServerPorts.upperBound) on \(serving.hostIP) to publish \(plan.servingPort == nil ? "the path's servicePort" : "the model server") on",
                    log: log)
            }
            usedPorts.insert(port)
            spec.ports = [ContainerEngine.PortMapping(containerPort: containerPort, hostPort: port, hostIP: serving.hostIP)]
            spec.labels[ContainerPlan.hostPortLabel] = String(port)
            entry.hostPort = port
        }
        let id: String
        do {
            id = try await engine.create(spec)
        } catch {
            switch error.code {
            case .imageMissing:
                // Nothing is published until a container exists.
                if plan.publishedPort != nil { entry.hostPort = nil }
                return startPull(&entry, status, image: plan.spec.image, workload: workload, log: log)
            case .nameConflict:
                // A container of that name that this node's labels do not cover: take the name back.
                log.warning("container name taken; removing the old container", metadata: ["name": "\(plan.spec.name)"])
                _ = try? await engine.remove(plan.spec.name)
                return failedAttempt(&entry, status, "container name \(plan.spec.name) was taken; retrying", log: log)
            case .invalidSpec:
                return failedAttempt(&entry, status, "invalid container spec: \(error.message)", log: log)
            default:
                return failedAttempt(&entry, status, "cannot create container: \(error.message)", log: log)
            }
        }
        entry.containerID = id
        status.containerID = id
        do {
            try await engine.start(id)
        } catch {
            if plan.publishedPort != nil {
                // Most likely its host port was taken meanwhile: the next attempt picks another.
                _ = try? await engine.remove(id)
                entry.containerID = nil
                status.containerID = nil
            }
            return failedAttempt(&entry, status, "container could not start: \(error.message)", log: log)
        }
        entry.nextAttempt = nil
        entry.runningSince = now
        entry.weights.started(at: now)
        log.info(
            "container started",
            metadata: ["container": "\(id.prefix(12))", "image": "\(plan.spec.image)",
                       "gpus": "\(plan.spec.gpuIndices.map(String.init).joined(separator: ","))"])
        status.phase = .running
        return status
    }

    /// A replica whose container waits (``waitReason(key:plan:container:users:)``): `starting`
    /// with the reason; logged when it starts waiting on something new.
    private func waiting(_ entry: Tracked, _ status: ReplicaStatus, _ wait: Wait, log: Logger) -> ReplicaStatus {
        var status = status
        status.phase = .starting
        status.reason = wait.reason
        status.message = wait.message
        if entry.current.message != wait.message || entry.current.reason != wait.reason {
            log.notice("container waits", metadata: ["reason": "\(wait.message)", "for": "\(wait.blocker)"])
        }
        return status
    }

    /// Records a failed create or start: phase failed with `message`, retried after the backoff.
    private func failedAttempt(_ entry: inout Tracked, _ status: ReplicaStatus, _ message: String, log: Logger) -> ReplicaStatus {
        var status = status
        status.phase = .failed
        status.message = message
        status.reason = .startFailed
        status.exitCode = nil
        if entry.current.message != message {
            log.error("replica failed", metadata: ["reason": "\(message)"])
        }
        entry.nextAttempt = clock.now + entry.backoff
        entry.backoff = min(entry.backoff * 2, settings.restartBackoffMax)
        return status
    }

    // MARK: Image pulls

    /// Where the replica stands with its image, when that keeps its container from being
    /// created: `starting` (``ReplicaStatus/Reason/pullingImage``, with the progress) while a
    /// pull runs; `failed` with ``ReplicaStatus/Reason/errImagePull`` on the pass that sees a
    /// pull fail, then ``ReplicaStatus/Reason/imagePullBackOff`` until its backoff passed. Nil
    /// when the container may be created (no pull ever needed, the pull succeeded, or the
    /// backoff passed: the create then pulls again if the image is still missing).
    private func imagePull(_ entry: inout Tracked, _ status: ReplicaStatus, image: String, log: Logger) -> ReplicaStatus? {
        var status = status
        let now = clock.now
        if let job = entry.pull.job, job.image != image {
            // Its spec changed meanwhile: the old image's pull no longer matters.
            entry.pull = ImagePullState()
        }
        if let job = entry.pull.job {
            switch job.outcome {
            case nil:
                entry.nextAttempt = nil
                status.phase = .starting
                status.reason = .pullingImage
                status.message = job.runningMessage
                return status
            case .success:
                log.info("image pulled", metadata: ["image": "\(image)", "progress": "\(job.progress)"])
                entry.pull = ImagePullState()
                entry.nextAttempt = nil
                return nil
            case .failure(let error):
                let pause = entry.pull.backoff ?? settings.imagePullBackoff
                let words = job.failureMessage(error)
                entry.pull.job = nil
                entry.pull.failures += 1
                entry.pull.failure = words
                entry.pull.failureShown = false
                entry.pull.pause = pause
                entry.pull.retryAt = now + pause
                entry.pull.backoff = min(pause * 2, settings.imagePullBackoffMax)
                log.error(
                    "image pull failed",
                    metadata: ["image": "\(image)", "registry": "\(job.registry)", "secret": "\(job.secret ?? "")",
                               "code": "\(error.code)", "failures": "\(entry.pull.failures)", "backoff": "\(pause)",
                               "reason": "\(words)"])
            }
        }
        guard let retryAt = entry.pull.retryAt, let failure = entry.pull.failure, now < retryAt else { return nil }
        status.phase = .failed
        status.exitCode = nil
        if !entry.pull.failureShown {
            // Reported once as it happened; the next pass, at once, shows the backoff.
            entry.pull.failureShown = true
            status.reason = .errImagePull
            status.message = failure
            entry.nextAttempt = now
        } else {
            status.reason = .imagePullBackOff
            let count = entry.pull.failures == 1 ? "1 failed pull" : "\(entry.pull.failures) failed pulls"
            status.message = "\(failure); back-off \(Self.text(entry.pull.pause)) after \(count) before pulling again"
            entry.nextAttempt = retryAt
        }
        return status
    }

    /// Starts pulling `image` for a workload whose create found it missing (or joins the pull of
    /// the same image for the same tenant under way): in the background, with the tenant's
    /// credential for the image's registry when it has one; a pass runs as it progresses
    /// (at most every ``ReconcilerSettings/imagePullProgressInterval``) and when it ends.
    private func startPull(_ entry: inout Tracked, _ status: ReplicaStatus, image: String, workload: Workload, log: Logger) -> ReplicaStatus {
        var replica: Replica?
        if case .replica(let value) = workload { replica = value }
        let pullKey = image + "\u{0}" + (replica?.metadata.tenant ?? "")
        let job: ImagePullJob
        if let running = pulls[pullKey] {
            job = running
        } else {
            job = ImagePullJob(image: image)
            pulls[pullKey] = job
            log.info("pulling image", metadata: ["image": "\(image)", "registry": "\(job.registry)"])
            let (engine, source, settings, hook, clock) = (engine, registryLogins, settings, retiredHook, clock)
            Task { [self] in
                var login: ContainerEngine.RegistryCredential?
                do {
                    if let replica, let source {
                        let runtime = ReplicaRuntime(registryCredentials: try await source(replica))
                        if let found = runtime.credential(forImage: image) {
                            job.secret = found.secret
                            login = ContainerEngine.RegistryCredential(
                                server: found.registry, username: found.username, password: found.password)
                        }
                    }
                    try await engine.pull(image, credential: login, timeout: settings.imagePullTimeout) { progress in
                        if job.record(progress, interval: settings.imagePullProgressInterval, now: clock.now) { hook() }
                    }
                    job.finish(.success(()))
                } catch let error as EngineError {
                    job.finish(.failure(error))
                } catch {
                    job.finish(.failure(EngineError(
                        code: .pullFailed, message: "cannot get the tenant's registry credentials from the api-server: \(error)",
                        subject: image)))
                }
                self.pullEnded(pullKey, job)
                hook()
            }
        }
        entry.pull.job = job
        entry.nextAttempt = nil
        var status = status
        status.phase = .starting
        status.reason = .pullingImage
        status.message = job.runningMessage
        return status
    }

    private func pullEnded(_ key: String, _ job: ImagePullJob) {
        if pulls[key] === job { pulls[key] = nil }
    }

    /// Reports `entry.current` (and a model server's readiness) when it differs from what was
    /// last reported.
    private func report(_ entry: Tracked, key: String, workload: Workload) async -> Tracked {
        var entry = entry
        if case .server(let server) = workload {
            let report = ModelServer.Report(
                ready: entry.ready, endpoint: entry.hostPort.map { serving.url(port: $0) }, container: entry.current)
            guard report != entry.reportedServer else { return entry }
            do {
                try await api.reportStatus(modelServer: server.metadata.name, report)
                entry.reportedServer = report
                entry.reported = entry.current
            } catch where error.code == .notFound {
                entry.reportedServer = report
            } catch {
                replicaLogger(key).warning("cannot report model server status; will retry", metadata: ["error": "\(error)"])
            }
            return entry
        }
        guard case .replica(let replica) = workload, entry.current != entry.reported else { return entry }
        do {
            try await api.reportStatus(replica: replica.metadata.tenant, replica.metadata.name, entry.current)
            entry.reported = entry.current
            replicaLogger(key).debug("status reported", metadata: ["phase": "\(entry.current.phase.rawValue)"])
        } catch where error.code == .notFound {
            // No longer bound here; the watch will say so.
            entry.reported = entry.current
        } catch {
            replicaLogger(key).warning("cannot report status; will retry", metadata: ["error": "\(error)"])
        }
        return entry
    }

    // MARK: Stopping

    /// Stops (with the grace period) and removes a container in the background; its GPUs
    /// (`claim`) stay taken until it is gone.
    private func retire(_ container: ContainerEngine.ContainerSummary, key: String, claim: GPUClaim, why: String) {
        guard retiring[container.id] == nil else { return }
        retiring[container.id] = Retiring(key: key, gpus: claim)
        replicaLogger(key).info(
            "stopping container", metadata: ["container": "\(container.id.prefix(12))", "reason": "\(why)"])
        let id = container.id
        Task { [self] in
            await self.stopAndRemove(id, key: key)
            self.retired(id)
        }
    }

    private func retired(_ id: String) {
        retiring[id] = nil
        retiredHook()
    }

    private func stopAndRemove(_ id: String, key: String) async {
        do {
            try await engine.stop(id, gracePeriod: settings.stopGracePeriod)
        } catch where error.code == .notFound {
            return
        } catch {
            replicaLogger(key).warning("stop failed; removing anyway", metadata: ["container": "\(id.prefix(12))", "error": "\(error)"])
        }
        do {
            try await engine.remove(id)
            replicaLogger(key).info("container removed", metadata: ["container": "\(id.prefix(12))"])
        } catch {
            replicaLogger(key).warning("remove failed", metadata: ["container": "\(id.prefix(12))", "error": "\(error)"])
        }
    }

    /// Whether containers are still being stopped.
    var isRetiring: Bool { !retiring.isEmpty }

    /// Whether a container in `status` holds its devices: it runs, or may run again at any moment.
    private static func usesDevices(_ status: ContainerEngine.ContainerState.Status) -> Bool {
        switch status {
        case .running, .paused, .restarting, .removing, .unknown: return true
        case .created, .exited, .dead: return false
        }
    }

    /// The GPUs `container` uses: from its ``ContainerPlan/gpusLabel``; for a container made
    /// before that label, from the plan of its replica when its spec hash matches (the hash
    /// covers the GPUs); unknown otherwise.
    private func claim(of container: ContainerEngine.ContainerSummary, plans: [String: ContainerPlan]) -> GPUClaim {
        if let value = container.labels[ContainerPlan.gpusLabel], let gpus = ContainerPlan.gpus(fromLabel: value) {
            return GPUClaim(gpus: gpus, group: container.labels[ContainerPlan.gpuSharingLabel])
        }
        if let key = container.labels[ContainerPlan.replicaLabel], let plan = plans[key],
            container.labels[ContainerPlan.specHashLabel] == plan.specHash
        {
            return GPUClaim(gpus: Set(plan.spec.gpuIndices), group: plan.gpuSharingGroup)
        }
        return GPUClaim(gpus: nil, group: nil)
    }

    // MARK: Helpers

    func replicaLogger(_ key: String) -> Logger {
        var log = logger
        log[metadataKey: "replica"] = "\(key)"
        return log
    }

    /// The bound GPUs (by index) that are out of service, with their health.
    private func unhealthyGPUs(_ indices: [Int]) -> [(GPUDevice, GPUHealth)] {
        indices.compactMap { index in
            guard let device = gpus.first(where: { $0.index == index }),
                let record = health.health(ofUUID: device.uuid), !record.healthy
            else { return nil }
            return (device, record)
        }
    }

    static func gpuMessage(_ sick: [(GPUDevice, GPUHealth)]) -> String {
        let parts = sick.map { device, record in "GPU \(device.index) (\(device.uuid)) is unhealthy: \(record.reason ?? "unknown")" }
        return parts.joined(separator: "; ")
    }

    static func text(_ duration: Duration) -> String {
        let seconds = duration.seconds
        if seconds == seconds.rounded() { return "\(Int(seconds))s" }
        let tenths = Int((seconds * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)s"
    }
}
