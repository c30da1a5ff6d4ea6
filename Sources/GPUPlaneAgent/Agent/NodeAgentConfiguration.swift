#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import Logging
import GPUPlaneSystem

/// Everything a ``NodeAgent`` is told: who it is and how often to do what.
public struct NodeAgentConfiguration: Sendable {
    /// The node's name (a DNS label); the node token must speak for it.
    public var nodeName: String
    /// The `gpu-mode` label: `dedicated`, `large` or `shared`.
    public var gpuMode: String
    /// The address the gateway reaches this node's containers on, when known.
    public var address: String?
    /// The gateway's base URL, for `NXL_INFERENCE_URL`.
    public var gatewayBaseURL: String
    /// The NVML library to load; nil: ``NVMLLibrary/configuredPath(environment:)``.
    public var nvmlLibraryPath: String?
    /// How often the heartbeat lease is renewed.
    public var heartbeatInterval: Duration
    /// How often a reconcile pass runs with nothing to wake it.
    public var resyncInterval: Duration
    /// Container stop grace and restart backoff.
    public var stopGracePeriod: Duration
    /// The first pause before restarting a crashed container; it doubles per restart.
    public var restartBackoff: Duration
    /// The cap of that pause.
    public var restartBackoffMax: Duration
    /// How XID and ECC events turn into GPU health (its ``HealthPolicy/quietPeriod`` is the
    /// time an unhealthy GPU must stay clean to return to service).
    public var healthPolicy: HealthPolicy
    /// The machine types a host's GPUs are matched against.
    public var machineTypes: MachineTypeTable
    /// How long a reconcile pass may be missing before the watchdog pings stop; nil: three
    /// resync intervals (at least 30 s).
    public var healthyPassWindow: Duration?
    /// The host ports model servers are published on, one each, on ``address`` (or loopback).
    public var modelServerPorts: ClosedRange<Int>
    /// How often a model server that is not ready yet has its `/v1/models` probed.
    public var readinessProbeInterval: Duration
    /// The pause after a failed image pull; it doubles per failure.
    public var imagePullBackoff: Duration = .seconds(10)
    /// The cap of that pause.
    public var imagePullBackoffMax: Duration = .seconds(300)
    /// The deadline of one image pull.
    public var imagePullTimeout: Duration = .seconds(3600)
    /// How often a pull's progress is reported in the replica's status at most.
    public var imagePullProgressInterval: Duration = .seconds(2)
    /// The node's part of the pod network (`<pod>.pod` names and pod-to-pod traffic across
    /// nodes); nil runs none: application pods then join the engine's default bridge.
    public var podNetwork: PodNetworkSettings? = nil
    /// The URL of this agent's listener as the api-server reaches it (``NodeSpec/agentURL``);
    /// nil when it runs none.
    public var agentURL: String? = nil
    /// Who may open connections to the ports this node publishes (``PublishedPortSources``);
    /// nil filters nothing (a node without `address` publishes on loopback only).
    public var publishedPortSources: PublishedPortSources? = nil
    /// CPU the node offers replicas, thousandths of a core (`allocatable-cpu`); nil reads it
    /// from the host (``HostCapacity``, minus ``systemReserved``). See ``allocatable(capacity:gpuType:gpus:)``.
    public var allocatableCPUMilli: Int? = nil
    /// Memory the node offers replicas, MB (`allocatable-memory`); nil reads it from the host.
    public var allocatableMemoryMB: Int? = nil
    /// CPU and memory kept for the host itself when allocatable is read from the host
    /// (`system-reserved-cpu`, `system-reserved-memory`): 100m and 256 MB by default.
    public var systemReserved = ComputeResources(cpuMilli: 100, memoryMB: 256)
    /// The node's weights cache (`weights-cache`, `weights-cache-size`…): model servers and
    /// deployment instances get their weights fetched into it and mounted read-only; nil runs
    /// none (weights that must be fetched then fail; host paths are still mounted).
    public var weightsCache: WeightsCacheSettings? = nil
    /// The agent's logger; `node` metadata is added.
    public var logger: Logger

    /// Makes a configuration.
    public init(
        nodeName: String, gpuMode: String, address: String? = nil, gatewayBaseURL: String,
        nvmlLibraryPath: String? = nil, heartbeatInterval: Duration = .seconds(1), resyncInterval: Duration = .seconds(10),
        stopGracePeriod: Duration = .seconds(10), restartBackoff: Duration = .seconds(1),
        restartBackoffMax: Duration = .seconds(60), healthPolicy: HealthPolicy = HealthPolicy(),
        machineTypes: MachineTypeTable = .standard, healthyPassWindow: Duration? = nil,
        modelServerPorts: ClosedRange<Int> = 20000...20999, readinessProbeInterval: Duration = .seconds(1),
        logger: Logger = Logger(label: "gpuplane.agent")
    ) {
        self.modelServerPorts = modelServerPorts
        self.readinessProbeInterval = readinessProbeInterval
        self.nodeName = nodeName
        self.gpuMode = gpuMode
        self.address = address
        self.gatewayBaseURL = gatewayBaseURL
        self.nvmlLibraryPath = nvmlLibraryPath
        self.heartbeatInterval = heartbeatInterval
        self.resyncInterval = resyncInterval
        self.stopGracePeriod = stopGracePeriod
        self.restartBackoff = restartBackoff
        self.restartBackoffMax = restartBackoffMax
        self.healthPolicy = healthPolicy
        self.machineTypes = machineTypes
        self.healthyPassWindow = healthyPassWindow
        self.logger = logger
    }
}
