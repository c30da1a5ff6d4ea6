import EtcdClient
import Foundation
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneSystem
import Logging

/// The heartbeats of the nodes that beat to this api-server, kept in memory: a node's beat
/// costs etcd nothing unless what the scheduler must know changes.
///
/// - A node's first beat to this api-server (or its registration), or its beat after it was
///   marked silent, writes its key `{"server": <id>, "state": "live"}` (``NodeHeartbeats``)
///   under this api-server's one lease (TTL ``leaseTTL``: three `heartbeat-ttl`s, at least
///   15 s; kept alive here). A beat that is not the first touches memory only.
/// - A sweep every ``sweepInterval`` marks the nodes silent for more than ``silentAfter``:
///   `state: "silent"`, compare-and-set on the key still being on this api-server's lease, so
///   an api-server whose node moved to another (which wrote the key under its own lease) never
///   marks it silent; a failed compare forgets the node.
/// - Time this api-server itself did not run is not a node's silence: a sweep that wakes more
///   than ``pauseTolerance`` late (the process was stopped or starved of CPU, and the beats
///   that came meanwhile wait unread in its sockets) adds its lateness to a running total, and
///   a node's quiet time is counted without the pauses since its last beat. Otherwise the
///   first sweep after such a pause, run before the backlog of beats is read, marks every node
///   silent at once (the failure detectors of Cassandra and Akka skip judging after a local
///   pause for the same reason). A node that really went silent meanwhile is marked the
///   pause's length later.
/// - Nor is the time a beat waited on this host before this api-server read it: thousands of
///   nodes moving here from an api-server that died queue their connections in the listener's
///   accept queue, then in the event loops and the task pool, and a node's beat sent on time
///   is read seconds later, after the sweep has judged it. Each beat's wait is known (it
///   reached this host when the kernel got its last bytes: ``BeatArrival``), and a node is
///   silent only past ``silentAfter`` plus the longest any beat waited to be read over the
///   last one to two ``silentAfter``s, at most ``silentAfter`` more: a node that really went
///   silent is marked as much later as this api-server is behind. A node's quiet time still
///   counts from when its last beat was read: an agent sends its next beat when the last one
///   is answered, so while reads lag, its beats arrive that lag apart, and counted from their
///   arrivals a node whose beats are read D late looks quiet for 2D just before each read.
/// - A watch of the heartbeat keys forgets a node whose key someone else wrote or deleted (it
///   moved to another api-server, or was deleted): its next beat here is a first beat again,
///   which finds a deleted node gone (404).
/// - A beat that comes more than ``rewriteAfterGap`` after the node's last beat here writes the
///   key again although memory says live: the node may have beaten to another api-server
///   meanwhile, which wrote the key under its lease and will mark it silent once the node
///   stops beating there, before this api-server's lagging watch has told it the key moved (an
///   overloaded pair of api-servers passing nodes back and forth).
/// - The lease lost (no renewal within its TTL: an etcd outage or an overloaded member) is
///   replaced at once, and the keys of the nodes written under it (deleted with it) are
///   written again under the new one, without waiting for their next beat.
///
/// A process that stops leaves its keys to its lease: they vanish ``leaseTTL`` later unless
/// their nodes beat to another api-server (or to this one restarted) first. The lease outlives
/// `heartbeat-ttl` on purpose: it bounds only how long a dead api-server's keys linger (the
/// nodes that live on rewrite theirs through another api-server within seconds), and a lease
/// as short as a beat's deadline lapsed whenever etcd was slow to answer one renewal, and each
/// lapse rewrote every key it held into the same slow etcd (2,000 simulated nodes on 2
/// cores). A restarted api-server starts empty and marks silent only the nodes that beat to it
/// since.
public final class HeartbeatTracker: Sendable {
    /// This api-server's id in the keys it writes (random per process).
    public let serverID: String
    /// The node heartbeat TTL, in seconds (`heartbeat-ttl`).
    public let ttl: Int64
    /// The TTL of this api-server's lease, in seconds (``defaultLeaseTTL(ttl:)`` unless told).
    public let leaseTTL: Int64
    /// How long a node may not beat before it is marked silent (`silent-after`).
    public let silentAfter: Duration
    /// How often silent nodes are looked for.
    public let sweepInterval: Duration
    /// A beat this long after the node's previous one here writes its key again (two thirds
    /// of ``silentAfter``, 2 s by default: a node beating every second never does).
    public var rewriteAfterGap: Duration { silentAfter * 2 / 3 }
    private let store: ResourceStore
    /// The keys' owner, with their group commit.
    let heartbeats: NodeHeartbeats
    private let logger: Logger
    private let state = Locked(State())

    private enum Phase {
        /// The key is being written live (by the beat or registration that found it needed).
        case writing
        /// The key says live, on `lease`.
        case live(lease: Int64)
        /// The sweep is writing the key silent; `beaten`: a beat came meanwhile.
        case silencing(lease: Int64, beaten: Bool)
        /// The key says silent.
        case silent
        /// The key went with a lost lease; to be written again.
        case lost
    }

    private struct Entry {
        var lastBeat: ContinuousClock.Instant
        var phase: Phase
        /// The revision of this api-server's last write of the key (0: none yet).
        var written: Int64 = 0
        /// ``State/paused`` at the node's last beat.
        var pausedAtBeat: Duration = .zero
    }

    private struct State {
        var nodes: [String: Entry] = [:]
        var lease: Int64?
        var granting: Task<Int64, any Error>?
        var keeper: Task<Void, Never>?
        var tasks: [Task<Void, Never>] = []
        var rewrites: [Task<Void, Never>] = []
        /// Set by ``drain()``: no node is judged silent any more.
        var draining = false
        /// How long this api-server has not run, in all (sweeps that woke late).
        var paused: Duration = .zero
        /// How long beats waited on this host before they were read, lately.
        var lateReads = LateReads()
    }

    /// The longest a beat waited on this host before this api-server read it, over the last
    /// one to two windows: a window's maximum is kept through the next window, then dropped.
    private struct LateReads {
        var current: Duration = .zero
        var previous: Duration = .zero
        var since: ContinuousClock.Instant?

        mutating func record(_ waited: Duration, at now: ContinuousClock.Instant, window: Duration) {
            roll(to: now, window: window)
            current = max(current, waited)
        }

        mutating func longest(at now: ContinuousClock.Instant, window: Duration) -> Duration {
            roll(to: now, window: window)
            return max(current, previous)
        }

        private mutating func roll(to now: ContinuousClock.Instant, window: Duration) {
            guard let since else {
                self.since = now
                return
            }
            let age = now - since
            guard age >= window else { return }
            previous = age >= window * 2 ? .zero : current
            current = .zero
            self.since = now
        }
    }

    /// Makes a tracker over `store`'s etcd; nothing runs until ``start()``, and no lease is
    /// granted before the first node beats.
    public init(
        store: ResourceStore, ttl: Int64, leaseTTL: Int64? = nil, silentAfter: Duration,
        sweepInterval: Duration = .milliseconds(500),
        serverID: String = "api-" + UUID().uuidString.lowercased().prefix(13), logger: Logger
    ) {
        self.store = store
        self.heartbeats = NodeHeartbeats(store: store)
        self.ttl = ttl
        self.leaseTTL = leaseTTL ?? Self.defaultLeaseTTL(ttl: ttl)
        self.silentAfter = silentAfter
        self.sweepInterval = sweepInterval
        self.serverID = serverID
        self.logger = logger
    }

    /// The `silent-after` an api-server uses unless told: 3 s, or two thirds of a shorter TTL.
    public static func defaultSilentAfter(ttl: Int64) -> Duration { min(.seconds(3), .seconds(max(1, ttl)) * 2 / 3) }

    /// How late a sweep may wake before the time it slept past counts as a pause of this
    /// api-server's: a third of ``silentAfter`` (1 s by default).
    public var pauseTolerance: Duration { silentAfter / 3 }

    /// How long this api-server has not run, in all, as its sweeps measured it.
    public var pausedTotal: Duration { state.withLock { $0.paused } }

    /// The lease TTL an api-server uses unless told: three `heartbeat-ttl`s, at least 15 s.
    public static func defaultLeaseTTL(ttl: Int64) -> Int64 { max(15, 3 * ttl) }

    /// Starts the sweep and the watch of the heartbeat keys (once).
    public func start() {
        state.withLock { s in
            guard s.tasks.isEmpty else { return }
            s.tasks = [Task { [self] in await sweepLoop() }, Task { [self] in await watchLoop() }]
        }
    }

    /// Stops the sweep, the watch and the lease's renewals, without revoking the lease (its
    /// keys go when it expires, as when the process dies).
    public func stop() {
        let tasks = state.withLock { s -> [Task<Void, Never>] in
            defer {
                s.tasks = []
                s.rewrites = []
                s.keeper = nil
                s.lease = nil
            }
            return s.tasks + s.rewrites + (s.keeper.map { [$0] } ?? [])
        }
        for task in tasks { task.cancel() }
    }

    /// The api-server is shutting down: from now on it marks no node silent. Its own closing
    /// listener is why its nodes stop beating here; judged silent, live nodes would go
    /// NotReady until they beat to another api-server. Their keys stay live under this
    /// api-server's lease until they do (their first beat there writes the key) or the lease
    /// lapses, as when an api-server dies.
    public func drain() {
        state.withLock { $0.draining = true }
    }

    /// The nodes this api-server has live now (tests, metrics).
    public var liveNodes: Set<String> {
        state.withLock { s in
            Set(s.nodes.compactMap { node, entry in
                if case .live = entry.phase { return node }
                return nil
            })
        }
    }

    /// Takes `node`'s beat (`registering`: its registration), read `now`; `arrived`: when it
    /// reached this host (``BeatArrival``), if known: how late it was read widens the silence
    /// the sweep allows every node for a while. Writes its key when this
    /// api-server has not written it live (first beat, after silence, after the node moved
    /// here), and always on registration; otherwise touches memory only. Outside registration,
    /// a key is only written for a node that exists.
    /// - Throws: ``StoreError`` (``StoreError/Code/notFound`` for a node that is not
    ///   registered; ``StoreError/Code/unavailable`` when etcd fails).
    public func beat(
        node: String, registering: Bool, arrived: ContinuousClock.Instant? = nil, now: ContinuousClock.Instant = .now
    ) async throws {
        let needsWrite = state.withLock { s -> Bool in
            s.lateReads.record(max(.zero, now - (arrived ?? now)), at: now, window: silentAfter)
            guard var entry = s.nodes[node] else {
                s.nodes[node] = Entry(lastBeat: now, phase: .writing, pausedAtBeat: s.paused)
                return true
            }
            let gap = now - entry.lastBeat
            entry.lastBeat = now
            entry.pausedAtBeat = s.paused
            var write = false
            switch entry.phase {
            case .live where gap > rewriteAfterGap:
                entry.phase = .writing
                write = true
            case .live, .writing: break
            case .silencing(let lease, _): entry.phase = .silencing(lease: lease, beaten: true)
            case .silent, .lost:
                entry.phase = .writing
                write = true
            }
            s.nodes[node] = entry
            return write
        }
        guard needsWrite || registering else { return }
        do {
            defer {
                // The node sends its next beat a beat's interval after this answer: a slow
                // write must not count as a gap (nor as silence).
                let answered = max(now, ContinuousClock.now)
                state.withLock { s in
                    if let entry = s.nodes[node], entry.lastBeat < answered { s.nodes[node]?.lastBeat = answered }
                }
            }
            guard try await writeLive(node, ifNodeExists: !registering) else {
                state.withLock { s in
                    if case .writing = s.nodes[node]?.phase { s.nodes[node] = nil }
                }
                throw StoreError(code: .notFound, message: "node \(node) is not registered")
            }
        } catch let error as StoreError where error.code == .notFound {
            throw error
        } catch {
            state.withLock { s in
                if case .writing = s.nodes[node]?.phase { s.nodes[node] = nil }
            }
            throw error
        }
    }

    /// Forgets `node` (it was deleted through this api-server): its next beat here checks
    /// that it exists.
    public func forget(node: String) {
        _ = state.withLock { $0.nodes.removeValue(forKey: node) }
    }

    /// Forgets `node` (``forget(node:)``) and deletes its key at once (it was deleted through
    /// this api-server).
    /// - Throws: ``StoreError`` when etcd fails (forgotten all the same).
    public func remove(node: String) async throws {
        forget(node: node)
        try await heartbeats.remove(node: node)
    }

    // MARK: Writes

    /// Writes `node`'s key live under the lease (a new one when the current one is gone);
    /// with `ifNodeExists`, only while the Node exists. False when it does not.
    @discardableResult
    private func writeLive(_ node: String, ifNodeExists: Bool = false) async throws -> Bool {
        var attempt = 0
        while true {
            let lease = try await currentLease()
            do {
                guard let revision = try await heartbeats.writeLive(node: node, server: serverID, lease: lease, ifNodeExists: ifNodeExists)
                else { return false }
                state.withLock { s in
                    // Forgotten meanwhile (moved or deleted by a later write): the next beat
                    // finds out again.
                    guard var entry = s.nodes[node] else { return }
                    if case .silencing(let silencing, _) = entry.phase {
                        // The sweep's silent write may land after this one: it writes live again.
                        entry.phase = .silencing(lease: silencing, beaten: true)
                    } else {
                        entry.phase = .live(lease: lease)
                    }
                    entry.written = max(entry.written, revision)
                    s.nodes[node] = entry
                }
                return true
            } catch let error as StoreError where error.etcd?.code == .leaseNotFound && attempt < 2 {
                attempt += 1
                leaseLost(lease)
            }
        }
    }

    /// The lease to write under, granted (and kept alive) when there is none.
    private func currentLease() async throws -> Int64 {
        let pending = state.withLock { s -> Task<Int64, any Error> in
            if let lease = s.lease { return Task { lease } }
            if let granting = s.granting { return granting }
            let granting = Task { [self] in try await grant() }
            s.granting = granting
            return granting
        }
        return try await pending.value
    }

    private func grant() async throws -> Int64 {
        let lease: Int64
        do {
            lease = try await store.client.grantLease(ttl: leaseTTL).id
        } catch let error as EtcdError {
            state.withLock { $0.granting = nil }
            throw StoreError.etcd(error)
        } catch {
            state.withLock { $0.granting = nil }
            throw error
        }
        let client = store.client
        let ttl = self.leaseTTL
        let keeper = Task { [self] in
            do {
                for try await _ in client.keepAlive(lease, ttl: ttl) {}
            } catch {
                logger.warning(
                    "the heartbeat lease was lost; its nodes' keys are written again under a new one",
                    metadata: ["lease": "\(lease)", "error": "\(error)"])
            }
            if !Task.isCancelled { leaseLost(lease) }
        }
        state.withLock { s in
            s.lease = lease
            s.granting = nil
            s.keeper = keeper
        }
        return lease
    }

    /// Forgets `lease`, and writes the nodes that were live under it again under a new one.
    private func leaseLost(_ lease: Int64) {
        let keeper = state.withLock { s -> Task<Void, Never>? in
            guard s.lease == lease else { return nil }
            s.lease = nil
            defer { s.keeper = nil }
            for (node, entry) in s.nodes {
                switch entry.phase {
                case .live(let l) where l == lease, .silencing(let l, _) where l == lease: s.nodes[node]?.phase = .lost
                default: break
                }
            }
            return s.keeper
        }
        guard let keeper else { return }
        keeper.cancel()
        let rewrite = Task { [self] in await rewriteLost() }
        state.withLock { s in
            s.rewrites.removeAll { $0.isCancelled }
            s.rewrites.append(rewrite)
        }
    }

    /// Writes the keys of the nodes whose lease was lost, each only while its Node exists; a
    /// node whose write fails waits for its next beat. The writes go together: the keys' group
    /// commit sends them a batch to an etcd request.
    private func rewriteLost() async {
        let lost = state.withLock { s -> [String] in
            let nodes = s.nodes.compactMap { node, entry -> String? in
                if case .lost = entry.phase { return node }
                return nil
            }
            for node in nodes { s.nodes[node]?.phase = .writing }
            return nodes
        }
        guard !lost.isEmpty else { return }
        logger.notice("writing the heartbeat keys of a lost lease again", metadata: ["nodes": "\(lost.count)"])
        await withTaskGroup(of: Void.self) { group in
            for node in lost {
                group.addTask { [self] in
                    let written = (try? await writeLive(node, ifNodeExists: true)) ?? false
                    guard !written else { return }
                    state.withLock { s in
                        if case .writing = s.nodes[node]?.phase { s.nodes[node] = nil }
                    }
                }
            }
        }
    }

    // MARK: Sweep

    private func sweepLoop() async {
        while !Task.isCancelled {
            let asleep = ContinuousClock.now
            try? await Task.sleep(for: sweepInterval)
            if Task.isCancelled { return }
            // Measured over the sleep alone: a sweep that took long (etcd slow to take its
            // writes) is not a pause.
            let now = ContinuousClock.now
            await sweep(now: now, late: now - asleep - sweepInterval)
        }
    }

    /// Marks silent the nodes that have not beaten for ``silentAfter`` plus the longest a beat
    /// waited to be read lately (at most ``silentAfter``), not counting this api-server's
    /// pauses: `late` (how late the sweep woke), past ``pauseTolerance``, is one.
    /// The sweep loop (``start()``) runs it every ``sweepInterval``; tests and benchmarks run it
    /// by hand, on a clock of their own.
    public func sweep(now: ContinuousClock.Instant = .now, late: Duration = .zero) async {
        let (due, pause, allowed) = state.withLock { s -> ([(node: String, lease: Int64, quiet: Duration)], Duration?, Duration) in
            var due: [(String, Int64, Duration)] = []
            var pause: Duration?
            if late > pauseTolerance {
                s.paused += late
                pause = late
            }
            guard !s.draining else { return (due, pause, silentAfter) }
            let allowed = silentAfter + min(s.lateReads.longest(at: now, window: silentAfter), silentAfter)
            for (node, entry) in s.nodes {
                let quiet = now - entry.lastBeat - (s.paused - entry.pausedAtBeat)
                guard case .live(let lease) = entry.phase, quiet > allowed else { continue }
                s.nodes[node]?.phase = .silencing(lease: lease, beaten: false)
                due.append((node, lease, quiet))
            }
            return (due, pause, allowed)
        }
        APIServerMetrics.silenceAllowed.set(allowed / .seconds(1))
        if let pause {
            logger.notice(
                "this api-server did not run for a while; its nodes' silence is counted without it",
                metadata: ["paused": "\(pause)", "nodes": "\(state.withLock { $0.nodes.count })"])
        }
        // Together: nodes that went silent at once (a rack, a network partition) go to etcd a
        // batch to a request through the keys' group commit, not one after another.
        await withTaskGroup(of: Void.self) { group in
            for (node, lease, quiet) in due {
                group.addTask { [self] in await markSilent(node, lease: lease, quiet: quiet, allowed: allowed) }
            }
        }
    }

    /// Writes `node`'s key silent (the sweep found it quiet for `quiet`), or live again when it
    /// beat meanwhile.
    private func markSilent(_ node: String, lease: Int64, quiet: Duration, allowed: Duration) async {
        let written: Int64?
        do {
            // Asked as the mark leaves (it may wait behind a burst of other keys' writes): a
            // node that beat meanwhile is not written silent at all, not even for a moment.
            written = try await heartbeats.markSilent(node: node, server: serverID, lease: lease) { [state] in
                state.withLock { s in
                    if case .silencing(_, beaten: false) = s.nodes[node]?.phase { return true }
                    return false
                }
            }
        } catch {
            // Withdrawn (it beat while its mark waited: the key says live still), or etcd failed
            // (live as before, tried again on the next sweep).
            if !(error is NodeHeartbeats.MarkWithdrawn) {
                logger.warning("cannot mark a silent node's heartbeat key", metadata: ["node": "\(node)", "error": "\(error)"])
            }
            state.withLock { s in
                if case .silencing(let lease, _) = s.nodes[node]?.phase { s.nodes[node]?.phase = .live(lease: lease) }
            }
            return
        }
        let rewrite = state.withLock { s -> Bool in
            guard var entry = s.nodes[node], case .silencing(_, let beaten) = entry.phase else { return false }
            guard let written else {
                // The key is not on this lease: the node moved, or went.
                s.nodes[node] = nil
                return false
            }
            entry.written = max(entry.written, written)
            entry.phase = beaten ? .writing : .silent
            s.nodes[node] = entry
            return beaten
        }
        if written != nil {
            logger.notice(
                "node silent",
                metadata: ["node": "\(node)", "silentAfter": "\(silentAfter)", "allowed": "\(allowed.seconds) s", "quiet": "\(quiet.seconds) s"])
        }
        if rewrite {
            // It beat while the key was being written silent: live again at once.
            do { try await writeLive(node) } catch {
                state.withLock { s in
                    if case .writing = s.nodes[node]?.phase { s.nodes[node] = nil }
                }
            }
        }
    }

    // MARK: Watch

    private func watchLoop() async {
        var failures = 0
        while !Task.isCancelled {
            do {
                let (keys, revision) = try await heartbeats.list()
                state.withLock { s in
                    for (node, entry) in s.nodes where entry.written != 0 && entry.written <= revision && !isOwn(keys[node]) {
                        s.nodes[node] = nil
                    }
                }
                failures = 0
                for try await changes in heartbeats.watch(from: revision + 1) {
                    guard !changes.isEmpty else { continue }
                    state.withLock { s in
                        for change in changes where !isOwn(change.state) {
                            guard let entry = s.nodes[change.node], change.revision > entry.written else { continue }
                            s.nodes[change.node] = nil
                        }
                    }
                }
            } catch {
                if Task.isCancelled { return }
                failures += 1
                if failures == 1 || failures % 20 == 0 {
                    logger.warning("heartbeat watch failed; listing again", metadata: ["error": "\(error)"])
                }
                try? await Task.sleep(for: ResourceStore.relistPause(afterFailures: failures))
            }
        }
    }

    /// Whether a key in `state` was written by this api-server.
    private func isOwn(_ state: NodeHeartbeats.KeyState?) -> Bool {
        switch state {
        case .live(let server?): server == serverID
        case .silent(let server): server == serverID
        default: false
        }
    }
}
