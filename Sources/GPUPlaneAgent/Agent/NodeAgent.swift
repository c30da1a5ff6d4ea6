import CurlHTTP
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import GPUPlaneService
import Logging
import ServiceLifecycle
import GPUPlaneSystem

/// The node-agent of one GPU host, as a service.
///
/// ``run()`` reads the GPUs through NVML (none when the library or driver is missing: the agent
/// still runs), registers the node, marks ``readinessComponent`` ready, and then, until
/// shutdown, runs side by side:
/// - the heartbeat, every ``NodeAgentConfiguration/heartbeatInterval`` (re-registering when
///   the api-server forgot the node);
/// - GPU health from ``GPUHealthMonitor``, logged per GPU (`gpu.uuid`) as it changes;
/// - the resumable watches of the replicas and the model servers bound to this node;
/// - the container engine's events, so an exit is acted on at once;
/// - the reconcile loop: a ``Reconciler`` pass on every change (a watch event, a GPU health
///   change, a container's exit or removal, the end of a container's stop) and at least every
///   ``NodeAgentConfiguration/resyncInterval``, then the Node status (per-GPU health,
///   `GPUHealthy` condition, containers) when it changed, and a systemd `STATUS=` line
///   ("8 GPUs, 8 healthy, 3 containers").
///
/// Shutting down leaves the containers running: a restarted agent adopts them.
public final class NodeAgent: Service, Sendable {
    /// The readiness component marked once the node is registered.
    public static let readinessComponent = "registered"

    /// The configuration.
    public let configuration: NodeAgentConfiguration
    let api: NodeAPI.Client
    let engine: ContainerEngine.Client
    let notifier: SystemdNotifier
    let readiness: ReadinessTracker?
    let logger: Logger
    let reconciler: Reconciler
    private let wakeup: Wakeup
    /// The node's part of the pod network, when configured.
    let podNetwork: PodNetwork?
    /// The host's CPU and memory, read once at start.
    let hostCapacity: HostCapacity
    /// Container CPU and memory limits (the machine type is set at registration).
    let sizing: ContainerSizing
    /// The node's weights cache (``NodeAgentConfiguration/weightsCache``); nil without one,
    /// or when its directory could not be prepared (logged).
    public let weightsCache: WeightsCache?
    private let state = Locked(State())
    private let clock = ContinuousClock()
    /// The key the api-server signs listener requests with (``AgentRequestSignature``).
    let agentKeyStore = Locked<[UInt8]?>(nil)

    private struct State {
        var gpus: [GPUDevice] = []
        var health = GPUHealthSnapshot(gpus: [])
        var registered = false
        var lastHealthyPass: ContinuousClock.Instant?
        var lastSummary: ReconcileSummary?
        var reportedStatus: NodeStatus?
        var statusLine: String?
        var statusSent: ContinuousClock.Instant?
        var gpuCondition: Condition?
    }

    /// Makes an agent. Nothing runs until ``run()``.
    ///
    /// - Parameters:
    ///   - notifier: where `STATUS=` lines go (`READY=1` comes from the ``Daemon`` through
    ///     `readiness`).
    ///   - readiness: marked ``readinessComponent`` once registered.
    ///   - registryLogins: where the registry credentials of a replica whose image must be
    ///     pulled come from; nil (the default): the api-server's
    ///     `GET /v1/replicas/{tenant}/{name}/runtime` (``NodeAPI/Client/runtime(of:)``).
    public init(
        configuration: NodeAgentConfiguration, api: NodeAPI.Client, engine: ContainerEngine.Client,
        notifier: SystemdNotifier = .disabled, readiness: ReadinessTracker? = nil,
        registryLogins: RegistryLoginSource? = nil
    ) {
        var logger = configuration.logger
        logger[metadataKey: "node"] = "\(configuration.nodeName)"
        self.configuration = configuration
        self.api = api
        self.engine = engine
        self.notifier = notifier
        self.readiness = readiness
        self.logger = logger
        let wakeup = Wakeup()
        self.wakeup = wakeup
        let podNetwork = configuration.podNetwork.map { PodNetwork(settings: $0, engine: engine, logger: logger) }
        self.podNetwork = podNetwork
        let hostCapacity = HostCapacity.read()
        self.hostCapacity = hostCapacity
        let sizing = ContainerSizing(hostCPUMilli: hostCapacity.cpuMilli, machineTypes: configuration.machineTypes)
        self.sizing = sizing
        var settings = ReconcilerSettings(
                node: configuration.nodeName, gatewayBaseURL: configuration.gatewayBaseURL,
                stopGracePeriod: configuration.stopGracePeriod, restartBackoff: configuration.restartBackoff,
                restartBackoffMax: configuration.restartBackoffMax, address: configuration.address,
                modelServerPorts: configuration.modelServerPorts, readinessProbeInterval: configuration.readinessProbeInterval,
                imagePullBackoff: configuration.imagePullBackoff, imagePullBackoffMax: configuration.imagePullBackoffMax,
                imagePullTimeout: configuration.imagePullTimeout,
                imagePullProgressInterval: configuration.imagePullProgressInterval)
        settings.sizing = sizing
        var weightsCache: WeightsCache?
        if let weights = configuration.weightsCache {
            let cache = WeightsCache(
                settings: weights, http: CurlHTTP.Client(name: "agent-weights-curl", maxConnections: 8), logger: logger)
            do {
                try cache.prepare()
                weightsCache = cache
            } catch {
                logger.error(
                    "cannot prepare the weights cache; servers whose weights must be fetched fail until the agent restarts",
                    metadata: ["directory": "\(weights.directory)", "error": "\(error.message)"])
            }
        }
        self.weightsCache = weightsCache
        WeightsMetrics.register()
        self.reconciler = Reconciler(
            settings: settings,
            engine: engine, api: api, logger: logger,
            registryLogins: registryLogins ?? { replica in try await api.runtime(of: replica).registryCredentials }, podNetwork: podNetwork,
            weightsCache: weightsCache,
            // A container finished stopping: whoever waited for its name or GPUs goes on now.
            retired: { wakeup.signal() })
    }

    /// The GPUs the node registered with (empty before registration or without NVML).
    public var gpus: [GPUDevice] { state.withLock { $0.gpus } }

    /// Whether the node is registered.
    public var isRegistered: Bool { state.withLock { $0.registered } }

    /// The last pass's summary.
    public var lastSummary: ReconcileSummary? { state.withLock { $0.lastSummary } }

    /// Whether a reconcile pass succeeded (the engine answered) within the healthy window: what
    /// the systemd watchdog is fed on.
    public var isHealthy: Bool {
        let window = configuration.healthyPassWindow ?? max(configuration.resyncInterval * 3, .seconds(30))
        return state.withLock { state in
            guard let last = state.lastHealthyPass else { return false }
            return clock.now - last <= window
        }
    }

    /// The `STATUS=` line: "8 GPUs, 8 healthy, 3 containers".
    public var statusLine: String? { state.withLock { $0.statusLine } }

    /// Runs until graceful shutdown or cancellation.
    public func run() async throws {
        let (inventory, monitor) = await openNVML()
        let gpus = inventory.devices
        let initialHealth = monitor?.current ?? GPUHealthSnapshot(gpus: [])
        state.withLock {
            $0.gpus = gpus
            $0.health = initialHealth
        }
        exportGPUMetrics(initialHealth, gpus: gpus)
        await reconciler.setHealth(initialHealth, gpus: gpus)
        await cancelWhenGracefulShutdown { [self] in
            guard await register(inventory) else { return }
            readiness?.markReady(Self.readinessComponent)
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.heartbeatLoop(inventory) }
                if let monitor { group.addTask { await self.healthLoop(monitor, gpus: gpus) } }
                group.addTask { await self.watchLoop() }
                group.addTask { await self.engineEventsLoop() }
                group.addTask { await self.reconcileLoop() }
                if self.configuration.agentURL != nil { group.addTask { await self.agentKeyLoop() } }
                if let podNetwork = self.podNetwork { group.addTask { await self.podNetworkLoop(podNetwork) } }
                if case .sources(let sources) = self.configuration.publishedPortSources {
                    group.addTask { await self.publishedPortGuardLoop(sources) }
                }
                await group.waitForAll()
            }
        }
        await monitor?.stop()
        logger.info("node-agent stopped; containers keep running")
    }

    // MARK: Start-up

    private func openNVML() async -> (GPUInventory, GPUHealthMonitor?) {
        let path = configuration.nvmlLibraryPath
        let opened = await BlockingCall.run(name: "gpuplane-nvml-open") { () -> Result<(NVMLLibrary, GPUInventory), NVMLError> in
            do throws(NVMLError) {
                let library = try NVMLLibrary(path: path)
                return .success((library, GPUInventory.read(from: library)))
            } catch {
                return .failure(error)
            }
        }
        switch opened {
        case .failure(let error):
            logger.warning(
                "NVML unavailable; this node reports no GPUs",
                metadata: ["library": "\(path ?? NVMLLibrary.configuredPath())", "error": "\(error)"])
            return (GPUInventory.unavailable("\(error)"), nil)
        case .success(let (library, inventory)):
            for problem in inventory.problems { logger.warning("GPU unreadable", metadata: ["problem": "\(problem)"]) }
            let monitor = GPUHealthMonitor(library: library, policy: configuration.healthPolicy, logger: logger)
            do {
                try await monitor.start()
            } catch {
                logger.error("GPU health monitoring could not start", metadata: ["error": "\(error)"])
                return (inventory, nil)
            }
            logger.info(
                "GPUs found",
                metadata: ["count": "\(inventory.gpus.count)", "product": "\(inventory.gpus.first?.name ?? "none")",
                           "driver": "\(inventory.driverVersion ?? "unknown")", "events": "\(monitor.isEventDriven)"])
            return (inventory, monitor)
        }
    }

    /// What the node registers with. A host without GPUs (NVML missing, or none) is a CPU node:
    /// `gpuplane.io/node-kind=cpu`, no `gpu-mode` label, and the largest CPU machine type its
    /// allocatable holds. Every node reports its allocatable CPU and memory
    /// (``NodeAgentConfiguration/allocatable(capacity:gpuType:gpus:)``).
    func registration(_ inventory: GPUInventory) -> NodeRegistration {
        let gpuType = inventory.machineType(in: configuration.machineTypes)
        let gpus = inventory.devices
        let allocatable = configuration.allocatable(capacity: hostCapacity, gpuType: gpuType, gpus: gpus.count)
        var registration: NodeRegistration
        if gpus.isEmpty {
            registration = NodeRegistration(
                name: configuration.nodeName, labels: [Node.nodeKindLabel: Node.cpuNodeKind],
                machineType: configuration.machineTypes.largestCPUType(fitting: allocatable)?.name, gpus: [],
                address: configuration.address, podSubnet: configuration.podNetwork?.subnet.description)
        } else {
            registration = NodeRegistration(
                name: configuration.nodeName, labels: [Node.gpuModeLabel: configuration.gpuMode],
                machineType: gpuType?.name, gpus: gpus,
                address: configuration.address, podSubnet: configuration.podNetwork?.subnet.description)
            if let gpuType, configuration.allocatableCPUMilli == nil,
                hostCapacity.cpuMilli < gpuType.cpuMilli * gpus.count || hostCapacity.memoryMB < gpuType.ramMB * gpus.count
            {
                logger.warning(
                    "the host has less CPU or memory than its GPUs' machine type promises; reporting the type's (set allocatable-cpu and allocatable-memory to say otherwise)",
                    metadata: ["host": "\(ComputeResources(cpuMilli: hostCapacity.cpuMilli, memoryMB: hostCapacity.memoryMB))",
                               "type": "\(gpuType.name) × \(gpus.count)"])
            }
        }
        registration.agentURL = configuration.agentURL
        registration.allocatableCPUMilli = allocatable.cpuMilli
        registration.allocatableMemoryMB = allocatable.memoryMB
        return registration
    }

    /// The registration and heartbeat loop this agent shares with hollow nodes.
    private var liveness: NodeLiveness {
        NodeLiveness(api: api, nodeName: configuration.nodeName, heartbeatInterval: configuration.heartbeatInterval, logger: logger)
    }

    /// Registers, retrying with doubling pauses; false when cancelled first.
    private func register(_ inventory: GPUInventory) async -> Bool {
        guard let node = await liveness.register({ self.registration(inventory) }) else { return false }
        sizing.machineType = node.spec.machineType
        state.withLock { $0.registered = true }
        logger.notice(
            "node registered",
            metadata: ["gpus": "\(inventory.gpus.count)", "machineType": "\(node.spec.machineType)",
                       "gpuMode": "\(configuration.gpuMode)"])
        return true
    }

    // MARK: Loops

    private func heartbeatLoop(_ inventory: GPUInventory) async {
        await liveness.heartbeatLoop { _ = await self.register(inventory) }
    }

    private func healthLoop(_ monitor: GPUHealthMonitor, gpus: [GPUDevice]) async {
        for await snapshot in monitor.updates() {
            let previous = state.withLock { state -> GPUHealthSnapshot in
                defer { state.health = snapshot }
                return state.health
            }
            for record in snapshot.gpus {
                let before = previous.health(ofUUID: record.uuid)
                guard before?.healthy != record.healthy || before?.reason != record.reason else { continue }
                var log = logger
                log[metadataKey: "gpu.uuid"] = "\(record.uuid)"
                let index = gpus.first { $0.uuid == record.uuid }?.index
                if record.healthy {
                    log.notice("GPU healthy", metadata: ["index": "\(index.map(String.init) ?? "?")"])
                } else {
                    log.error("GPU unhealthy", metadata: ["index": "\(index.map(String.init) ?? "?")", "reason": "\(record.reason ?? "unknown")"])
                }
            }
            exportGPUMetrics(snapshot, gpus: gpus)
            await reconciler.setHealth(snapshot, gpus: gpus)
            wakeup.signal()
        }
    }

    /// Follows the replicas and model servers bound here, over one connection.
    private func watchLoop() async {
        for await change in api.workloadChanges(node: configuration.nodeName) {
            switch change {
            case .replicas(let change): await reconciler.apply(change)
            case .modelServers(let change): await reconciler.apply(change)
            }
            wakeup.signal()
        }
    }

    private func engineEventsLoop() async {
        var backoff = Duration.milliseconds(200)
        let labels = await reconciler.ownLabels
        while !Task.isCancelled {
            do {
                for try await event in try engine.events(labels: labels) {
                    backoff = .milliseconds(200)
                    if ["die", "died", "oom", "remove", "kill"].contains(event.action) { wakeup.signal() }
                }
            } catch {
                if Task.isCancelled { return }
                logger.debug("engine event stream ended; reconnecting", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, .seconds(5))
            // Whatever happened while the stream was down is found by a pass.
            wakeup.signal()
        }
    }

    private func reconcileLoop() async {
        var engineFailing = false
        while !Task.isCancelled {
            var wait = configuration.resyncInterval
            do {
                let summary = try await reconciler.pass()
                if engineFailing { logger.notice("container engine answers again") }
                engineFailing = false
                state.withLock {
                    $0.lastHealthyPass = clock.now
                    $0.lastSummary = summary
                }
                if let due = summary.nextDue { wait = min(wait, max(.milliseconds(10), due - clock.now)) }
                if await reconciler.hasListed {
                    await publishNodeStatus(containers: summary.running)
                    publishStatusLine(containers: summary.running)
                }
            } catch {
                if !engineFailing { logger.error("reconcile pass failed: the container engine does not answer", metadata: ["error": "\(error)"]) }
                engineFailing = true
                wait = min(wait, .seconds(2))
            }
            await wakeup.wait(upTo: wait)
        }
    }

    // MARK: Reporting

    private func publishNodeStatus(containers: Int) async {
        let report = state.withLock { state -> NodeStatus? in
            let sick = state.health.unhealthy
            let healthy = sick.isEmpty
            var condition = Condition(
                type: "GPUHealthy", status: healthy, reason: healthy ? "AllGPUsHealthy" : (sick.first?.reason ?? "Unhealthy"),
                message: healthy
                    ? "\(state.health.gpus.count) GPUs healthy"
                    : sick.map { record in
                        let index = state.gpus.first { $0.uuid == record.uuid }?.index
                        return "GPU \(index.map(String.init) ?? "?") (\(record.uuid)): \(record.reason ?? "unhealthy")"
                    }.joined(separator: "; "),
                lastTransition: Date())
            if let previous = state.gpuCondition, previous.status == condition.status {
                condition.lastTransition = previous.lastTransition
            }
            state.gpuCondition = condition
            let status = NodeStatus(conditions: [condition], gpuHealth: state.health.gpus, containers: containers)
            return status == state.reportedStatus ? nil : status
        }
        guard let report else { return }
        do {
            try await api.reportStatus(node: configuration.nodeName, report)
            state.withLock { $0.reportedStatus = report }
        } catch {
            logger.warning("cannot report node status; will retry", metadata: ["error": "\(error)"])
        }
    }

    private func publishStatusLine(containers: Int) {
        let line = state.withLock { state -> String? in
            let total = state.health.gpus.count
            let healthy = state.health.gpus.filter(\.healthy).count
            let line = "\(total) GPUs, \(healthy) healthy, \(containers) containers"
            // Sent on change, and again now and then: READY=1 carries a STATUS= of its own.
            let now = clock.now
            guard line != state.statusLine || state.statusSent.map({ now - $0 >= .seconds(30) }) ?? true else { return nil }
            state.statusLine = line
            state.statusSent = now
            return line
        }
        guard let line else { return }
        do {
            try notifier.status(line)
        } catch {
            logger.debug("sd_notify STATUS failed", metadata: ["error": "\(error)"])
        }
    }
}
