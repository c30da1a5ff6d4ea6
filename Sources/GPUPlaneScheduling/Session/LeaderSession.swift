#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneSystem
import Logging

/// What the scheduler does while it leads, one term long: ``pass()``, run whenever one of the
/// informers (nodes, replicas, model servers, tenants and deployments) or the heartbeat watch
/// of its ``ClusterCache`` (the scheduler's, kept across terms) changes, and every
/// ``Configuration/resyncInterval``. Read ``pass()`` top to bottom; each step is a function of
/// the pass's lists (``PassInput``) in its own file, returning the writes it wants, and one
/// ``Committer`` commits them:
///
/// 1. **Node lifecycle** (`NodeLifecycle.swift`): a node's `Ready` condition follows its
///    heartbeat key, with a grace for a key never seen.
/// 2. **Evictions** (`Evictions.swift`): replicas bound to a node not ready, a GPU unhealthy or
///    gone, or a model server gone go back to pending; model servers there are deleted.
/// 3. **Meter** (`UsageMeter.swift`), when an interval is complete: usage records, then the
///    deployments of tenants over their spending limit scaled to `min_instances`.
/// 4. **Placement** (`Placement.swift`): every pending replica through
///    ``Pipeline/placeBatch(_:in:preempt:)``; bindings with new model servers and preemptions.
/// 5. **Autoscaling** (`Autoscaler.swift`), when a round is due: every deployment sized between
///    `min_instances` and `max_instances` for the load the gateways report.
/// 6. **Status upkeep** (`StatusUpkeep.swift`): deployments' instance counts, model servers'
///    attached replicas.
/// 7. **Warm pool** (`WarmPool.swift`): idle model servers stopped, warm ones started.
/// 8. **Usage retention** (`UsageRetention.swift`), while a scan is due or under way: one
///    page of usage records whose month ended longer ago than the retention compacted into
///    monthly totals (the totals and the records' deletion in one fenced transaction).
/// 9. **Events**: the pass rings the event writer, which writes the events due
///    (`Committer.swift`) in a task of its own, so no pass waits on them.
///
/// Steps 1 to 5 end the pass when they wrote; the next one starts once the informers have seen
/// those writes, so no decision is ever made on a cache older than the leader's own writes.
/// Every transaction carries the leader key's fence: once this term is over, nothing commits.
public final class LeaderSession: Sendable {
    /// The leadership this session serves: every write is fenced on it.
    public let fence: LeaderFence
    let store: ResourceStore
    let configuration: Configuration
    let logger: Logger

    var nodes: Informer<Node> { informers.nodes }
    var replicas: Informer<Replica> { informers.replicas }
    var servers: Informer<ModelServer> { informers.servers }
    var tenants: Informer<Tenant> { informers.tenants }
    var deployments: Informer<Deployment> { informers.deployments }
    var heartbeats: HeartbeatWatcher { cache.heartbeats }
    /// Rung by the caches at every change.
    var wakeup: Wakeup { cache.wakeup }
    /// Where the informers and heartbeats come from: the ``Scheduler``'s, kept across terms, or
    /// the session's own (``ownsCache``), started and stopped with it.
    private let cache: ClusterCache
    private let ownsCache: Bool
    private let informers: ClusterCache.Informers
    /// Rung at the end of a pass that recorded events: the event writer's doorbell.
    let eventsDue = Wakeup()

    let committer: Committer
    let nodeLifecycle: NodeLifecycle
    let evictions = Evictions()
    let meter: UsageMeter
    let placement: PlacementStep
    let autoscaler: Autoscaler
    let warmPool: WarmPool
    let usageRetention: UsageRetention
    private let passes = Locked(0)
    /// When the election was won, and how long after it the caches were synced.
    private let wonAt: ContinuousClock.Instant
    private let startup = Locked<Duration?>(nil)

    /// Makes a session for the leadership `fence` stands for.
    public convenience init(
        store: ResourceStore, pipeline: Pipeline, fence: LeaderFence, configuration: Configuration,
        logger: Logger
    ) {
        let cache = ClusterCache(store: store, logger: logger)
        self.init(
            store: store, pipeline: pipeline, fence: fence, configuration: configuration, events: EventRecorder(),
            cache: cache, informers: cache.informers, ownsCache: true, wonAt: .now, logger: logger)
    }

    /// Makes a session whose events go to `events` and that reads `informers` of `cache`: the
    /// ``Scheduler`` passes one recorder and one cache to every term it wins, so an event
    /// recorded in a term that lapsed before its flush (a bind committed, then the lease lost on
    /// a loaded machine) is written by the next term, and a term won again lists nothing again
    /// that its caches already hold (``ClusterCache/ready(for:within:)``). `wonAt` is when the
    /// election was won: the term's startup (``Statistics/startup``) counts from it.
    init(
        store: ResourceStore, pipeline: Pipeline, fence: LeaderFence, configuration: Configuration,
        events: EventRecorder, cache: ClusterCache, informers: ClusterCache.Informers, ownsCache: Bool = false,
        wonAt: ContinuousClock.Instant, logger: Logger
    ) {
        self.wonAt = wonAt
        self.store = store
        self.fence = fence
        self.configuration = configuration
        self.logger = logger
        self.cache = cache
        self.ownsCache = ownsCache
        self.informers = informers
        self.committer = Committer(
            store: store, fence: fence,
            configuration: .init(
                maxOperationsPerTransaction: configuration.maxOperationsPerTransaction,
                eventFlushInterval: configuration.eventFlushInterval, eventTTL: configuration.eventTTL),
            events: events, logger: logger)
        self.nodeLifecycle = NodeLifecycle(heartbeatGrace: configuration.heartbeatGrace)
        self.meter = UsageMeter(configuration: configuration.meter, cursor: MeterCursor(store: store, key: configuration.meter.cursorKey), logger: logger)
        self.placement = PlacementStep(
            pipeline: pipeline, leaderRevision: fence.revision, preemption: configuration.preemption,
            recordBindEvents: configuration.recordBindEvents)
        self.autoscaler = Autoscaler(
            configuration: .init(interval: configuration.autoscaleInterval, scaleDownDelay: configuration.scaleDownDelay),
            planner: ReplicaPlanner(catalog: pipeline.catalog, machineTypes: pipeline.machineTypes), logger: logger)
        self.warmPool = WarmPool(
            pool: configuration.warmPool, idleServerGrace: configuration.idleServerGrace, pipeline: pipeline,
            leaderRevision: fence.revision, logger: logger)
        self.usageRetention = UsageRetention(configuration: configuration.usageRetentionSettings, logger: logger)
    }

    /// The counters so far.
    public var statistics: Statistics {
        let committed = committer.counters
        let metered = meter.counters
        var s = Statistics()
        s.passes = passes.withLock { $0 }
        s.bindings = committed.bindings
        s.transactions = committed.transactions
        s.conflicts = committed.conflicts
        s.preemptions = committed.preemptions
        s.evictions = evictions.evicted
        s.usageRecords = metered.records
        s.meterIntervals = metered.intervals
        s.autoscaleRounds = autoscaler.rounds
        s.usageRecordsCompacted = usageRetention.compacted
        s.startup = startup.withLock { $0 }
        return s
    }

    // MARK: The pass

    /// One pass, the steps of the list above in order; true when it wrote and another pass
    /// should follow at once.
    func pass() async throws -> Bool {
        passes.withLock { $0 += 1 }
        let started = ContinuousClock.now
        defer {
            SchedulerMetrics.passes.increment()
            SchedulerMetrics.passDuration.recordNanoseconds((ContinuousClock.now - started).wholeNanoseconds)
        }
        let input = await timed(.read) { readInput() }
        SchedulerMetrics.pendingReplicas.record(input.replicas.reduce(0) { $0 + ($1.binding == nil ? 1 : 0) })

        // 1. Node lifecycle.
        if try await timed(.nodeLifecycle, { try await committer.commit(nodeLifecycle.writes(input, confirmSilent: heartbeats.confirmSilent)) }) { return true }

        // 2. Evictions.
        if try await timed(.evictions, { try await committer.commit(evictions.writes(input)) }) { return true }

        // 3. Meter, when an interval is complete.
        if meter.isDue(now: input.now), try await timed(.meter, { try await committer.commit(meter.run(input, store: store, committer: committer)) }) {
            return true
        }

        // 4. Placement.
        var snapshot = await timed(.snapshot) { placement.snapshot(of: input) }
        let placed = await timed(.placement) { placement.writes(input, &snapshot) }
        if try await timed(.placementCommit, { try await committer.commit(placed) }) {
            eventsDue.ring()
            return true
        }

        // 5. Autoscaling, when a round is due.
        if autoscaler.isDue(now: input.clock), let demand = await autoscaler.readDemand(from: LoadReports(store: store), now: input.clock),
            try await timed(.autoscaling, { try await committer.commit(autoscaler.writes(input, demand: demand, overSpendingLimit: meter.isOverSpendingLimit)) })
        {
            eventsDue.ring()
            return true
        }

        // 6. Status upkeep.
        try await timed(.statusUpkeep) { try await committer.commit(StatusUpkeep.writes(input)) }

        // 7. Warm pool.
        try await timed(.warmPool) { try await committer.commit(warmPool.writes(input, &snapshot)) }

        // 8. Usage retention, while a scan is due or under way.
        if usageRetention.isDue(now: input.clock) {
            _ = try await timed(.usageRetention) { try await usageRetention.run(input, store: store, committer: committer) }
        }

        // 9. Events.
        eventsDue.ring()
        return false
    }

    /// `body`, its duration recorded as `step`'s (`gpuplane_scheduler_step_duration_seconds`).
    @discardableResult
    private func timed<T>(_ step: SchedulerMetrics.Step, _ body: () async throws -> T) async rethrows -> T {
        let started = ContinuousClock.now
        defer { SchedulerMetrics.stepDuration[step]?.recordNanoseconds((ContinuousClock.now - started).wholeNanoseconds) }
        return try await body()
    }

    /// The informers' caches and the heartbeats now; the replicas' revision before their list.
    private func readInput() -> PassInput {
        let replicaRevision = replicas.lastSeenRevision
        return PassInput(
            nodes: nodes.list(), replicas: replicas.list(), servers: servers.list(), deployments: deployments.list(),
            tenants: tenants.list(), liveness: heartbeats.liveness, replicaRevision: replicaRevision, now: Date(),
            clock: .now)
    }

    // MARK: The term

    /// Runs the term until cancelled.
    /// - Throws: ``SchedulerError`` with ``SchedulerError/Code/leadershipLost`` when a fenced
    ///   write is refused: another replica leads now.
    public func run() async throws {
        if ownsCache { cache.start() }
        defer { if ownsCache { cache.stop() } }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.loop() }
            group.addTask { try await self.writeEvents() }
            defer { group.cancelAll() }
            try await group.next()
        }
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
        let took = ContinuousClock.now - wonAt
        startup.withLock { $0 = took }
        SchedulerMetrics.termStartup.recordNanoseconds(took.wholeNanoseconds)
        logger.info("informers synced", metadata: ["nodes": "\(nodes.list().count)", "replicas": "\(replicas.list().count)"])
        while !Task.isCancelled {
            try await timed(.catchUp) { try await catchUp() }
            let again = try await pass()
            try Task.checkCancellation()
            if !again {
                await wakeup.wait(timeout: min(configuration.resyncInterval, meter.timeUntilDue(now: Date())))
                if configuration.batchWindow > .zero { try await Task.sleep(for: configuration.batchWindow) }
            }
        }
    }

    /// Writes the events due whenever a pass rings, and at every resync: repeats become due
    /// with time alone.
    /// - Throws: ``SchedulerError/Code/leadershipLost`` when the fence no longer holds.
    private func writeEvents() async throws {
        while !Task.isCancelled {
            await eventsDue.wait(timeout: configuration.resyncInterval)
            if Task.isCancelled { return }
            do {
                try await committer.flushEvents()
            } catch let error as SchedulerError where error.code == .leadershipLost {
                throw error
            } catch {
                logger.warning("events not written; trying again", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Waits until every informer has seen the session's own latest writes of its kind.
    private func catchUp() async throws {
        let awaited = committer.awaited
        let deadline = ContinuousClock.now + configuration.catchUpTimeout
        for (kind, revision) in awaited {
            guard let informer = informers.follower(of: kind), informer.lastSeenRevision < revision else { continue }
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { await informer.waitUntilSeen(revision) }
                group.addTask { try await Task.sleep(until: deadline) }
                try await group.next()
                group.cancelAll()
            }
            try Task.checkCancellation()
            if informer.lastSeenRevision < revision {
                throw SchedulerError(.informerStopped, "the \(kind.rawValue) informer did not reach revision \(revision)")
            }
        }
        committer.reached(awaited)
    }
}
