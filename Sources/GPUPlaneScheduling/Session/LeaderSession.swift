import EtcdClient
import Foundation
import GPUPlaneCore
import GPUPlaneStore
import Logging
import GPUPlaneSystem

/// What the scheduler does while it leads, one term long. Read ``pass()`` top to bottom:
///
/// 1. **Node lifecycle**: a heartbeat key seen to expire → the node's `Ready` condition turns
///    false (`HeartbeatExpired`); a key back → true. A Ready node whose key was never seen
///    (it registered a moment ago, or this term began after its key went) gets
///    ``Configuration/heartbeatGrace`` first, so two watches a moment apart never make a node
///    that never stopped NotReady.
/// 2. **Evictions**: replicas bound to a node that is not ready, to an unhealthy GPU, or to a
///    model server that is gone go back to pending with a message saying why; model servers
///    on such nodes or GPUs are deleted (the node-agent stops what is no longer bound to it).
/// 3. **Meter**, when an interval is complete (``UsageMeter``).
/// 4. **Placement**: every pending replica through ``Pipeline/placeBatch(_:in:preempt:)`` on
///    a snapshot built from the informers' caches; the bindings (with new model servers and
///    preemptions) commit in fenced transactions, each replica compared on its resourceVersion.
/// 5. **Autoscaling**: every deployment sized between `min_instances` and `max_instances` for
///    the load the gateways report (``Autoscaler``).
/// 6. **Status upkeep**: a deployment's `status` says how many instances are placed ("2/3
///    running, waiting for capacity"); a model server's `status.attachedReplicas` lists the
///    replicas bound to it. Each is written only when it changes.
/// 7. **Warm pool** and idle model servers.
///
/// A step that wrote ends the pass; the next one starts once the informers have seen those
/// writes, so no decision is ever made on a cache older than the leader's own writes.
/// Every transaction carries the leader key's fence: once this term is over, nothing commits.
public final class LeaderSession: Sendable {
    /// Knobs of a term.
    public struct Configuration: Sendable {
        /// Pending replicas are looked at again this often even when nothing changed.
        public var resyncInterval: Duration
        /// Changes arriving within this window are handled in one pass.
        public var batchWindow: Duration
        /// Writes in one transaction at most (etcd's `--max-txn-ops` is 128 by default; the fence
        /// and the per-operation reads of the failure branch count too).
        public var maxOperationsPerTransaction: Int
        /// Whether a replica that doesn't fit may preempt lower tiers.
        public var preemption: Bool
        /// Repeats of an event are written at most this often.
        public var eventFlushInterval: Duration
        /// How long etcd keeps an event after its last write (see `RotatingLease`).
        public var eventTTL: Duration
        /// Whether each bind is recorded as an `Event` (`Scheduled`).
        public var recordBindEvents: Bool
        /// The usage meter.
        public var meter: UsageMeter.Configuration
        /// Model servers kept running with no tenant attached, per catalog slug.
        public var warmPool: [String: Int]
        /// A model server no bound replica uses is stopped once it is this old (and not needed
        /// for the warm pool).
        public var idleServerGrace: Duration
        /// How long to wait for the informers to see the session's own writes.
        public var catchUpTimeout: Duration
        /// How often deployments are sized for the gateways' load reports.
        public var autoscaleInterval: Duration
        /// How long fewer instances must be wanted than run before a deployment scales down.
        public var scaleDownDelay: Duration
        /// How long a Ready node may show no heartbeat key, without its key having been seen
        /// to expire, before it is NotReady.
        public var heartbeatGrace: Duration

        /// Makes a configuration.
        public init(
            resyncInterval: Duration = .seconds(1), batchWindow: Duration = .milliseconds(5),
            maxOperationsPerTransaction: Int = 100, preemption: Bool = true,
            eventFlushInterval: Duration = .seconds(10), recordBindEvents: Bool = true,
            meter: UsageMeter.Configuration = .init(), warmPool: [String: Int] = [:],
            idleServerGrace: Duration = .seconds(60), catchUpTimeout: Duration = .seconds(10),
            eventTTL: Duration = .seconds(3600), autoscaleInterval: Duration = .seconds(2),
            scaleDownDelay: Duration = .seconds(300), heartbeatGrace: Duration = .seconds(5)
        ) {
            self.heartbeatGrace = heartbeatGrace
            self.eventTTL = eventTTL
            self.autoscaleInterval = autoscaleInterval
            self.scaleDownDelay = scaleDownDelay
            self.resyncInterval = resyncInterval
            self.batchWindow = batchWindow
            self.maxOperationsPerTransaction = maxOperationsPerTransaction
            self.preemption = preemption
            self.eventFlushInterval = eventFlushInterval
            self.recordBindEvents = recordBindEvents
            self.meter = meter
            self.warmPool = warmPool
            self.idleServerGrace = idleServerGrace
            self.catchUpTimeout = catchUpTimeout
        }
    }

    /// Counters of the term, for tests, metrics and the benchmark.
    public struct Statistics: Sendable, Hashable {
        /// Passes run.
        public var passes = 0
        /// Replicas bound.
        public var bindings = 0
        /// Transactions committed.
        public var transactions = 0
        /// Transactions refused on a resourceVersion (retried on a later pass).
        public var conflicts = 0
        /// Preemptions carried out.
        public var preemptions = 0
        /// Replicas sent back to pending by node lifecycle or GPU health.
        public var evictions = 0
        /// Usage records written.
        public var usageRecords = 0
        /// Meter intervals completed.
        public var meterIntervals = 0
        /// Autoscaler rounds run (load reports read, deployments sized).
        public var autoscaleRounds = 0
    }

    /// The reason given with the fence in every transaction.
    static let fenceReason = "scheduler leadership"
    /// Why a transaction that adds whole GPUs to a tenant failed: another such write committed
    /// after the read its GPU-limit check was made on.
    static let gpuGuardReason = "another write took GPUs of this tenant meanwhile"
    /// A node's `Ready` reasons written by the node-lifecycle controller.
    public enum ReadyReason {
        /// The heartbeat key is gone: the node stopped calling.
        public static let heartbeatExpired = "HeartbeatExpired"
        /// The heartbeat key is there.
        public static let heartbeatReceived = "HeartbeatReceived"
    }
    /// The tenant the warm pool's placement requests use (no GPU limit).
    static let warmTenant = "_warm"

    /// The leadership this session serves.
    public let leader: Etcd.LeaderKey
    let store: ResourceStore
    let pipeline: Pipeline
    let configuration: Configuration
    let logger: Logger

    let nodes: Informer<Node>
    let replicas: Informer<Replica>
    let servers: Informer<ModelServer>
    let tenants: Informer<Tenant>
    let deployments: Informer<Deployment>
    let heartbeats: HeartbeatWatcher
    let events = EventRecorder()
    let eventLease: RotatingLease
    let meter: UsageMeter
    let autoscaler: Autoscaler
    let wakeup = Wakeup()
    private let state = Locked(State())

    private struct State {
        var stats = Statistics()
        /// kind → the revision its informer must reach before the next pass.
        var awaited: [ResourceKind: Int64] = [:]
        /// Replicas whose `invalid` outcome was reported already.
        var reportedInvalid: [String: String] = [:]
        /// Unhealthy GPUs already reported (node/uuid).
        var unhealthyReported: Set<String> = []
        /// Replicas preempted this term, with the words saying by whom (kept in their message
        /// while they wait).
        var preempted: [String: String] = [:]
        /// Ready nodes without a heartbeat key whose expiry was not seen, since when.
        var missingSince: [String: ContinuousClock.Instant] = [:]
    }

    /// Makes a session for `leader`.
    public init(
        store: ResourceStore, pipeline: Pipeline, leader: Etcd.LeaderKey, configuration: Configuration,
        logger: Logger
    ) {
        self.store = store
        self.pipeline = pipeline
        self.leader = leader
        self.configuration = configuration
        self.logger = logger
        self.nodes = Informer(store: store, logger: logger)
        self.replicas = Informer(store: store, logger: logger)
        self.servers = Informer(store: store, logger: logger)
        self.tenants = Informer(store: store, logger: logger)
        self.deployments = Informer(store: store, logger: logger)
        let wakeup = self.wakeup
        self.heartbeats = HeartbeatWatcher(client: store.client, logger: logger) { wakeup.ring() }
        self.meter = UsageMeter(configuration: configuration.meter, logger: logger)
        self.autoscaler = Autoscaler(
            configuration: .init(interval: configuration.autoscaleInterval, scaleDownDelay: configuration.scaleDownDelay))
        self.eventLease = RotatingLease(ttl: configuration.eventTTL)
    }

    /// The counters so far.
    public var statistics: Statistics { state.withLock { $0.stats } }

    func statisticsUpdate(_ body: (inout Statistics) -> Void) { state.withLock { body(&$0.stats) } }

    /// Runs the term until cancelled.
    /// - Throws: ``SchedulerError`` with ``SchedulerError/Code/leadershipLost`` when a fenced
    ///   write is refused: another replica leads now.
    public func run() async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            let wakeup = self.wakeup
            group.addTask { await self.heartbeats.run() }
            group.addTask { await self.follow(self.nodes, wakeup) }
            group.addTask { await self.follow(self.replicas, wakeup) }
            group.addTask { await self.follow(self.servers, wakeup) }
            group.addTask { await self.follow(self.tenants, wakeup) }
            group.addTask { await self.follow(self.deployments, wakeup) }
            group.addTask {
                defer { self.stopInformers() }
                try await self.loop()
            }
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    private func follow<R: Resource>(_ informer: Informer<R>, _ wakeup: Wakeup) async {
        informer.start()
        for await _ in informer.events() { wakeup.ring() }
    }

    private func stopInformers() {
        nodes.stop()
        replicas.stop()
        servers.stop()
        tenants.stop()
        deployments.stop()
    }

    private func loop() async throws {
        try await nodes.waitUntilSynced()
        try await replicas.waitUntilSynced()
        try await servers.waitUntilSynced()
        try await tenants.waitUntilSynced()
        try await deployments.waitUntilSynced()
        while !heartbeats.hasSynced {
            try await Task.sleep(for: .milliseconds(5))
        }
        logger.info("informers synced", metadata: ["nodes": "\(nodes.list().count)", "replicas": "\(replicas.list().count)"])
        while !Task.isCancelled {
            try await catchUp()
            let again = try await pass()
            try Task.checkCancellation()
            if !again {
                await wakeup.wait(timeout: min(configuration.resyncInterval, meter.timeUntilDue(now: Date())))
                if configuration.batchWindow > .zero { try await Task.sleep(for: configuration.batchWindow) }
            }
        }
    }

    /// Waits until every informer has seen the session's own latest writes of its kind.
    private func catchUp() async throws {
        let awaited = state.withLock { $0.awaited }
        let deadline = ContinuousClock.now + configuration.catchUpTimeout
        for (kind, revision) in awaited {
            while seenRevision(kind) < revision {
                if ContinuousClock.now > deadline {
                    throw SchedulerError(.informerStopped, "the \(kind.rawValue) informer did not reach revision \(revision)")
                }
                try await Task.sleep(for: .milliseconds(1))
            }
        }
        state.withLock { s in
            for (kind, revision) in awaited where s.awaited[kind] == revision { s.awaited.removeValue(forKey: kind) }
        }
    }

    private func seenRevision(_ kind: ResourceKind) -> Int64 {
        switch kind {
        case .node: return nodes.lastSeenRevision
        case .replica: return replicas.lastSeenRevision
        case .modelServer: return servers.lastSeenRevision
        case .tenant: return tenants.lastSeenRevision
        case .deployment: return deployments.lastSeenRevision
        default: return .max
        }
    }

    // MARK: The pass

    /// One pass; true when it wrote and another pass should follow at once.
    func pass() async throws -> Bool {
        state.withLock { $0.stats.passes += 1 }
        let now = Date()
        let nodeList = nodes.list()
        let replicaList = replicas.list()
        let serverList = servers.list()
        let liveness = heartbeats.liveness

        // 1. Node lifecycle.
        if try await commit(nodeLifecycle(nodeList, liveness, now: now, clock: .now)) { return true }

        // 2. Evictions from nodes not ready, unhealthy GPUs, vanished servers.
        if try await commit(evictions(nodeList, replicaList, serverList)) { return true }

        // 3. The meter, when an interval is complete.
        if meter.isDue(now: now) {
            let wrote = try await meter.run(session: self, replicas: replicaList, now: now)
            if wrote { return true }
        }

        // 4. Placement.
        var snapshot = makeSnapshot(nodeList, replicaList, serverList)
        let placement = placementWrites(replicaList, &snapshot)
        if try await commit(placement) {
            try await flushEvents()
            return true
        }

        // 5. Autoscaling, when a round is due.
        let clock = ContinuousClock.now
        if autoscaler.isDue(now: clock), try await autoscaler.run(session: self, replicas: replicaList, now: clock) {
            try await flushEvents()
            return true
        }

        // 6. Deployment status and model server attachments.
        _ = try await commit(deploymentStatus(replicaList) + serverAttachments(serverList, replicaList))

        // 7. Warm pool and idle servers.
        _ = try await commit(warmPool(serverList, replicaList, &snapshot, now: now))

        try await flushEvents()
        return false
    }

    func makeSnapshot(_ nodeList: [Node], _ replicaList: [Replica], _ serverList: [ModelServer]) -> ClusterSnapshot {
        var tenantList = tenants.list()
        tenantList.append(Tenant(metadata: ObjectMeta(name: Self.warmTenant), spec: .init(plan: .enterprise, gpuLimit: .max)))
        return ClusterSnapshot(
            nodes: nodeList, replicas: replicaList, modelServers: serverList, tenants: tenantList,
            machineTypes: pipeline.machineTypes, seed: UInt64(bitPattern: leader.revision))
    }

    // MARK: 1. Node lifecycle

    func nodeLifecycle(
        _ nodeList: [Node], _ liveness: HeartbeatWatcher.Liveness, now: Date, clock: ContinuousClock.Instant
    ) -> [WriteUnit] {
        var units: [WriteUnit] = []
        // A Ready node whose key is absent but was never seen to expire is silent only once
        // the grace has passed on this scheduler's own clock.
        let grace = configuration.heartbeatGrace
        let silent: Set<String> = state.withLock { s in
            var silent = liveness.expired
            var missing: [String: ContinuousClock.Instant] = [:]
            for node in nodeList where !liveness.live.contains(node.metadata.name) && !liveness.expired.contains(node.metadata.name) {
                let since = s.missingSince[node.metadata.name] ?? clock
                missing[node.metadata.name] = since
                if clock - since >= grace { silent.insert(node.metadata.name) }
            }
            s.missingSince = missing
            return silent
        }
        for node in nodeList {
            let current = node.status.conditions.first { $0.type == NodeHeartbeat.readyCondition }
            let alive = liveness.live.contains(node.metadata.name)
            let ready = current?.status ?? false
            var updated = node
            let involved = OwnerReference(kind: .node, name: node.metadata.name, uid: node.metadata.uid)
            if alive, !ready, current == nil || current?.reason == ReadyReason.heartbeatExpired {
                updated.status.conditions.removeAll { $0.type == NodeHeartbeat.readyCondition }
                updated.status.conditions.append(Condition(
                    type: NodeHeartbeat.readyCondition, status: true, reason: ReadyReason.heartbeatReceived,
                    message: "heartbeat key present", lastTransition: now))
                units.append(WriteUnit(ops: [.update(updated)], events: [
                    .init(involved: involved, tenant: ObjectMeta.clusterTenant, severity: .normal,
                          reason: EventRecorder.Reason.nodeReady, message: "node \(node.metadata.name) is ready", aggregate: false)
                ]))
            } else if !alive, ready, silent.contains(node.metadata.name) {
                updated.status.conditions.removeAll { $0.type == NodeHeartbeat.readyCondition }
                updated.status.conditions.append(Condition(
                    type: NodeHeartbeat.readyCondition, status: false, reason: ReadyReason.heartbeatExpired,
                    message: "heartbeat lease expired", lastTransition: now))
                units.append(WriteUnit(ops: [.update(updated)], events: [
                    .init(involved: involved, tenant: ObjectMeta.clusterTenant, severity: .warning,
                          reason: EventRecorder.Reason.nodeNotReady,
                          message: "node \(node.metadata.name) heartbeat expired; its replicas are rescheduled", aggregate: false)
                ]))
            }
        }
        return units
    }

    // MARK: 2. Evictions

    func evictions(_ nodeList: [Node], _ replicaList: [Replica], _ serverList: [ModelServer]) -> [WriteUnit] {
        let byName = Dictionary(nodeList.map { ($0.metadata.name, $0) }, uniquingKeysWith: { a, _ in a })
        var units: [WriteUnit] = []

        // Why nothing may run on `node`'s GPUs `indices`, or nil when all is well.
        func trouble(_ nodeName: String, _ indices: [Int]) -> (String, String?)? {
            guard let node = byName[nodeName] else { return ("node \(nodeName) is gone", nil) }
            if !node.status.isReady {
                let reason = node.status.conditions.first { $0.type == NodeHeartbeat.readyCondition }?.reason ?? "NotReady"
                return ("node \(nodeName) not ready (\(reason))", nil)
            }
            let health = Dictionary(node.status.gpuHealth.map { ($0.uuid, $0) }, uniquingKeysWith: { a, _ in a })
            for index in indices {
                guard let gpu = node.spec.gpus.first(where: { $0.index == index }) else {
                    return ("GPU \(index) is gone from node \(nodeName)", nil)
                }
                if let report = health[gpu.uuid], !report.healthy {
                    return ("GPU \(index) on node \(nodeName) is unhealthy (\(report.reason ?? "unhealthy"))", gpu.uuid)
                }
            }
            return nil
        }

        // Unhealthy GPUs, reported once each.
        for node in nodeList {
            for report in node.status.gpuHealth where !report.healthy {
                let key = "\(node.metadata.name)/\(report.uuid)"
                let fresh = state.withLock { $0.unhealthyReported.insert(key).inserted }
                guard fresh else { continue }
                let index = node.spec.gpus.first { $0.uuid == report.uuid }?.index ?? -1
                events.record(.init(
                    involved: OwnerReference(kind: .node, name: node.metadata.name, uid: node.metadata.uid),
                    tenant: ObjectMeta.clusterTenant, severity: .warning, reason: EventRecorder.Reason.gpuUnhealthy,
                    message: "GPU \(index) (\(report.uuid)) unhealthy: \(report.reason ?? "unknown"); it takes no new work",
                    aggregate: false))
            }
            let healthyNow = Set(node.status.gpuHealth.filter(\.healthy).map { "\(node.metadata.name)/\($0.uuid)" })
            state.withLock { $0.unhealthyReported.subtract(healthyNow) }
        }

        var goneServers = Set<String>()
        for server in serverList {
            guard let binding = server.binding, trouble(binding.node, binding.gpuIndices) != nil else { continue }
            goneServers.insert(server.metadata.name)
            units.append(WriteUnit(ops: [.delete(server)]))
        }
        let existingServers = Set(serverList.map(\.metadata.name)).subtracting(goneServers)
        for replica in replicaList {
            guard let binding = replica.binding else { continue }
            var why: String?
            if let (message, _) = trouble(binding.node, binding.gpuIndices) {
                why = message
            } else if let server = binding.modelServer, !existingServers.contains(server) {
                why = "model server \(server) is gone"
            }
            guard let why else { continue }
            var updated = replica
            updated.unbind(message: "\(why); rescheduling")
            units.append(WriteUnit(ops: [.update(updated)], events: [
                .init(involved: Self.reference(replica), tenant: replica.metadata.tenant, severity: .warning,
                      reason: EventRecorder.Reason.rescheduled, message: "\(why); rescheduling", aggregate: false)
            ]))
        }
        if !units.isEmpty {
            let count = units.filter { $0.ops.contains { $0.kind == .replica } }.count
            state.withLock { $0.stats.evictions += count }
        }
        return units
    }

    // MARK: 4. Placement

    func placementWrites(_ replicaList: [Replica], _ snapshot: inout ClusterSnapshot) -> [WriteUnit] {
        let pending = replicaList.filter { $0.binding == nil && $0.status.phase == .pending }
        guard !pending.isEmpty else { return [] }
        let byKey = Dictionary(replicaList.map { ("\($0.metadata.tenant)/\($0.metadata.name)", $0) }, uniquingKeysWith: { a, _ in a })
        let serversByName = Dictionary(servers.list().map { ($0.metadata.name, $0) }, uniquingKeysWith: { a, _ in a })
        let result = pipeline.placeBatch(pending, in: &snapshot, preempt: configuration.preemption)

        var units: [WriteUnit] = []
        var messages: [WriteUnit] = []
        for entry in result.entries {
            let key = "\(entry.tenant)/\(entry.name)"
            guard let replica = byKey[key] else { continue }
            switch entry.outcome {
            case .bound(let placement):
                units.append(bindUnit(replica, placement))
            case .preempting(let plan, let placement):
                var unit = bindUnit(replica, placement)
                for victim in plan.victims {
                    guard var v = byKey[victim.key], v.binding != nil else { continue }
                    v.unbind(message: plan.message(for: victim))
                    unit.ops.append(.update(v))
                    state.withLock { $0.preempted[victim.key] = plan.message(for: victim) }
                    unit.events.append(.init(
                        involved: Self.reference(v), tenant: v.metadata.tenant, severity: .warning,
                        reason: EventRecorder.Reason.preempted, message: plan.message(for: victim), aggregate: false))
                }
                for name in plan.modelServersToStop {
                    if let server = serversByName[name] { unit.ops.append(.delete(server)) }
                }
                unit.events.append(.init(
                    involved: Self.reference(replica), tenant: replica.metadata.tenant, severity: .normal,
                    reason: EventRecorder.Reason.preempting, message: plan.preemptorMessage, aggregate: false))
                units.append(unit)
            case .refused(let refusal):
                var summary = refusal.summary
                if let preempted = state.withLock({ $0.preempted[key] }) { summary = "\(preempted); waiting: \(summary)" }
                events.record(.init(
                    involved: Self.reference(replica), tenant: replica.metadata.tenant, severity: .warning,
                    reason: EventRecorder.Reason.failedScheduling, message: summary, aggregate: true))
                if replica.status.message != summary {
                    var updated = replica
                    updated.status.message = summary
                    messages.append(WriteUnit(ops: [.update(updated)]))
                }
            case .invalid(let error):
                let seen = state.withLock { $0.reportedInvalid.updateValue(error.message, forKey: key) }
                guard error.code != .notAGPUReplica, seen != error.message else { continue }
                events.record(.init(
                    involved: Self.reference(replica), tenant: replica.metadata.tenant, severity: .warning,
                    reason: EventRecorder.Reason.failedScheduling, message: error.message, aggregate: true))
                if replica.status.message != error.message {
                    var updated = replica
                    updated.status.message = error.message
                    messages.append(WriteUnit(ops: [.update(updated)]))
                }
            }
        }
        return units + messages
    }

    private func bindUnit(_ replica: Replica, _ placement: Placement) -> WriteUnit {
        state.withLock { _ = $0.preempted.removeValue(forKey: "\(replica.metadata.tenant)/\(replica.metadata.name)") }
        var updated = replica
        var binding = placement.binding
        binding.leaderRevision = leader.revision
        updated.binding = binding
        updated.status.phase = .bound
        updated.status.message = nil
        var ops: [WriteOp] = []
        if let plan = placement.newModelServer {
            var server = plan.modelServer(catalog: pipeline.catalog)
            server.binding?.leaderRevision = leader.revision
            server.status.attachedReplicas = ["\(replica.metadata.tenant)/\(replica.metadata.name)"]
            ops.append(.create(server))
        }
        ops.append(.update(updated))
        var unit = WriteUnit(ops: ops, bindings: [binding])
        if configuration.recordBindEvents {
            let gpus = binding.gpuIndices.map(String.init).joined(separator: ",")
            let server = binding.modelServer.map { " (model server \($0))" } ?? ""
            unit.events.append(.init(
                involved: Self.reference(replica), tenant: replica.metadata.tenant, severity: .normal,
                reason: EventRecorder.Reason.scheduled,
                message: "bound to \(binding.node) GPU \(gpus)\(server)", aggregate: false))
        }
        return unit
    }

    // MARK: 5. Deployments

    func deploymentStatus(_ replicaList: [Replica]) -> [WriteUnit] {
        var owned: [String: [Replica]] = [:]
        for replica in replicaList where replica.spec.owner.kind == .deployment {
            owned["\(replica.metadata.tenant)/\(replica.spec.owner.name)", default: []].append(replica)
        }
        var units: [WriteUnit] = []
        for deployment in deployments.list() {
            switch deployment.status.state {
            case .deleting, .failed, .stopped: continue
            default: break
            }
            let mine = owned["\(deployment.metadata.tenant)/\(deployment.metadata.name)"] ?? []
            let wanted = deployment.status.instancesWanted > 0 ? deployment.status.instancesWanted : mine.count
            guard wanted > 0 else { continue }
            let placed = mine.filter(\.holdsCapacity).count
            let summary = InstancePlacement(placements: [], refusal: nil, running: placed, wanted: wanted)
            var status = deployment.status
            status.state = summary.state
            status.message = summary.message
            status.instancesRunning = mine.filter { $0.binding != nil && $0.status.phase == .running }.count
            status.instancesWanted = wanted
            guard status != deployment.status else { continue }
            var updated = deployment
            updated.status = status
            units.append(WriteUnit(ops: [.update(updated)]))
        }
        return units
    }

    /// Model servers whose `attachedReplicas` (`tenant/name` of each replica bound to them,
    /// sorted) differ from what the replicas say: one update each.
    func serverAttachments(_ serverList: [ModelServer], _ replicaList: [Replica]) -> [WriteUnit] {
        var attached: [String: [String]] = [:]
        for replica in replicaList {
            guard replica.holdsCapacity, let server = replica.binding?.modelServer else { continue }
            attached[server, default: []].append("\(replica.metadata.tenant)/\(replica.metadata.name)")
        }
        var units: [WriteUnit] = []
        for server in serverList {
            let now = (attached[server.metadata.name] ?? []).sorted()
            guard now != server.status.attachedReplicas else { continue }
            var updated = server
            updated.status.attachedReplicas = now
            units.append(WriteUnit(ops: [.update(updated)]))
        }
        return units
    }

    // MARK: 6. Warm pool and idle servers

    func warmPool(_ serverList: [ModelServer], _ replicaList: [Replica], _ snapshot: inout ClusterSnapshot, now: Date) -> [WriteUnit] {
        var used = Set<String>()
        for replica in replicaList {
            if let server = replica.binding?.modelServer { used.insert(server) }
        }
        var idleBySlug: [String: [ModelServer]] = [:]
        for server in serverList where !used.contains(server.metadata.name) {
            idleBySlug[server.spec.slug, default: []].append(server)
        }
        var units: [WriteUnit] = []
        // Idle servers beyond the pool stop once past their grace (warm ones are kept first).
        let grace = Double(configuration.idleServerGrace.components.seconds)
        for (slug, idle) in idleBySlug {
            let keep = configuration.warmPool[slug] ?? 0
            let ordered = idle.sorted { ($0.spec.warm ? 0 : 1, $0.metadata.name) < ($1.spec.warm ? 0 : 1, $1.metadata.name) }
            for server in ordered.dropFirst(keep) {
                guard let created = server.metadata.created, now.timeIntervalSince(created) >= grace else { continue }
                units.append(WriteUnit(ops: [.delete(server)], events: [
                    .init(involved: Self.reference(server), tenant: ObjectMeta.clusterTenant, severity: .normal,
                          reason: EventRecorder.Reason.modelServer, message: "stopped idle model server \(server.metadata.name)",
                          aggregate: false)
                ]))
            }
        }
        // Missing warm servers are placed like a replica would be, but always on a new server.
        for (slug, count) in configuration.warmPool.sorted(by: { $0.key < $1.key }) {
            let missing = count - (idleBySlug[slug]?.count ?? 0)
            guard missing > 0, let model = pipeline.catalog.model(slug) else { continue }
            for i in 0..<missing {
                let demand: PlacementRequest.Demand
                switch model.mode {
                case .sharedPinned: demand = .shared(slug: slug, vramGB: model.vramGB)
                case .largePinned: demand = .largeSlot(slug: slug, vramGB: max(model.vramGB, PlacementRequest.largeSlotMinimumGB))
                case .dedicated: continue
                }
                let request = PlacementRequest(
                    name: "warm-\(slug)-\(i)", tenant: Self.warmTenant, demand: demand, priority: .batch)
                var trial = snapshot
                trial.openServers[slug] = []
                guard case .bound(let placement) = pipeline.evaluate(request, in: trial),
                    let plan = placement.newModelServer
                else {
                    logger.debug("no room for a warm model server", metadata: ["slug": "\(slug)"])
                    break
                }
                snapshot.commit(placement)
                var server = plan.modelServer(catalog: pipeline.catalog)
                server.spec.warm = true
                server.binding?.leaderRevision = leader.revision
                units.append(WriteUnit(ops: [.create(server)], events: [
                    .init(involved: OwnerReference(kind: .modelServer, name: server.metadata.name, uid: ""),
                          tenant: ObjectMeta.clusterTenant, severity: .normal, reason: EventRecorder.Reason.modelServer,
                          message: "started warm model server of \(slug) on \(plan.node) GPU \(plan.gpuIndex)", aggregate: false)
                ]))
            }
        }
        return units
    }

    // MARK: Committing

    /// Commits `units` in fenced transactions of at most `maxOperationsPerTransaction` writes,
    /// in order, stopping at the first that fails (a later unit may build on an earlier one:
    /// a replica attaching to a server created before it). True when anything committed.
    /// - Throws: ``SchedulerError/Code/leadershipLost`` when the fence no longer holds.
    @discardableResult
    func commit(_ units: [WriteUnit]) async throws -> Bool {
        guard !units.isEmpty else { return false }
        let limit = max(1, configuration.maxOperationsPerTransaction)
        var chunks: [[WriteUnit]] = [[]]
        var size = 0
        for unit in units {
            let ops = unit.ops.count + unit.guards.count
            if size + ops > limit, !(chunks.last?.isEmpty ?? true) {
                chunks.append([])
                size = 0
            }
            chunks[chunks.count - 1].append(unit)
            size += ops
        }
        var wrote = false
        for chunk in chunks {
            var txn = StoreTransaction()
            txn.require(leader.fence, reason: Self.fenceReason)
            var kinds = Set<ResourceKind>()
            // One bump per key (etcd refuses a key written twice in one transaction), on the
            // oldest revision any of the chunk's decisions read it at.
            var guards: [String: Int64] = [:]
            for unit in chunk {
                for op in unit.ops {
                    try txn.add(op)
                    kinds.insert(op.kind)
                }
                for guarded in unit.guards { guards[guarded.key] = min(guards[guarded.key] ?? .max, guarded.revision) }
            }
            for (key, revision) in guards.sorted(by: { $0.key < $1.key }) {
                txn.bump(key, unchangedSince: revision, reason: Self.gpuGuardReason)
            }
            do {
                let result = try await store.commit(txn)
                wrote = true
                let bound = chunk.reduce(0) { $0 + $1.bindings.count }
                let preempting = chunk.filter { $0.events.contains { $0.reason == EventRecorder.Reason.preempting } }.count
                state.withLock { s in
                    s.stats.transactions += 1
                    s.stats.bindings += bound
                    s.stats.preemptions += preempting
                    for kind in kinds { s.awaited[kind] = max(s.awaited[kind] ?? 0, result.revision) }
                }
                for unit in chunk {
                    for occurrence in unit.events { events.record(occurrence) }
                }
            } catch let error as StoreError {
                try handleFailure(error, txnKinds: chunk.flatMap { $0.ops.map(\.kind) })
                return wrote
            }
        }
        return wrote
    }

    /// A failed transaction: the fence means the term is over; a version conflict waits for
    /// the informer to catch up and is retried by a later pass.
    func handleFailure(_ error: StoreError, txnKinds: [ResourceKind]) throws {
        switch error.code {
        case .preconditionFailed where error.failedCondition == Self.gpuGuardReason:
            state.withLock { $0.stats.conflicts += 1 }
            logger.debug("a GPU admission of the tenant committed meanwhile; deciding again on the next pass")
        case .preconditionFailed:
            throw SchedulerError(.leadershipLost, "a fenced write was refused: \(leader.keyString) no longer leads")
        case .conflict, .notFound, .alreadyExists:
            state.withLock { s in
                s.stats.conflicts += 1
                if let index = error.failedIndex, index < txnKinds.count, let version = error.currentVersion.flatMap(Int64.init) {
                    let kind = txnKinds[index]
                    s.awaited[kind] = max(s.awaited[kind] ?? 0, version)
                }
            }
            logger.debug("transaction conflict; retrying on the next pass", metadata: ["error": "\(error)"])
        default:
            logger.warning("transaction failed; retrying on the next pass", metadata: ["error": "\(error)"])
        }
    }

    /// Writes the events that are due, in fenced transactions.
    func flushEvents(now: Date = Date()) async throws {
        let interval = Double(configuration.eventFlushInterval.components.seconds)
            + Double(configuration.eventFlushInterval.components.attoseconds) / 1e18
        let ttl = Double(configuration.eventTTL.components.seconds) + Double(configuration.eventTTL.components.attoseconds) / 1e18
        let due = events.due(now: now, interval: interval, forgetAfter: ttl)
        guard !due.isEmpty else { return }
        let lease = try await eventLease.lease(etcd: store.client)
        let limit = max(1, configuration.maxOperationsPerTransaction)
        var start = 0
        while start < due.count {
            let chunk = Array(due[start..<min(start + limit, due.count)])
            start += chunk.count
            var txn = StoreTransaction()
            txn.require(leader.fence, reason: Self.fenceReason)
            for (_, op) in chunk { try txn.add(op, lease: lease) }
            do {
                let result = try await store.commit(txn)
                events.committed(chunk.map(\.0), revision: result.revision, now: now)
            } catch let error as StoreError {
                if error.code == .preconditionFailed {
                    throw SchedulerError(.leadershipLost, "a fenced event write was refused")
                }
                // Adopt what the store holds for the one that failed; the rest go next time.
                if let index = error.failedIndex, index < chunk.count, let event = events.event(chunk[index].0) {
                    let stored = try? await store.get(Event.self, tenant: event.metadata.tenant, name: event.metadata.name)
                    events.reconcile(chunk[index].0, stored: stored)
                }
                return
            }
        }
    }

    static func reference<R: Resource>(_ object: R) -> OwnerReference {
        OwnerReference(kind: R.kind, name: object.metadata.name, uid: object.metadata.uid)
    }
}
