import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneSystem
import Logging

/// What a leader reads the cluster from: list-then-watch caches (``Informer``) of nodes,
/// replicas, model servers, tenants and deployments, the nodes' heartbeats
/// (``HeartbeatWatcher``), and the doorbell they all ring at a change.
///
/// The ``Scheduler`` keeps one from the first term it wins until it stops, so a lease lost and
/// won again on a loaded machine starts the next term on caches already filled instead of
/// reading and decoding every node, replica and model server again at the worst moment (etcd was
/// slow enough to let a renewal lapse). A replica that lost its term to another keeps
/// following, a warm standby.
///
/// A term may decide only on caches that hold everything committed before its leader key was
/// created, every write of an earlier leader included: ``ready(for:within:)`` keeps each cache
/// that reaches the key's revision, or that etcd confirms current with one read of keys only
/// (``Informer/confirmCurrent()``: a kind nothing wrote to lately shows no newer revision),
/// within a short wait, and lists again those that do not.
///
/// The heartbeats are kept as they are: a node is marked NotReady only after a read of its key
/// (``HeartbeatWatcher/confirmSilent(_:)``), so a change still on its way costs a pass, not a
/// wrong decision.
final class ClusterCache: Sendable {
    /// One informer per kind the leader follows.
    struct Informers: Sendable {
        var nodes: Informer<Node>
        var replicas: Informer<Replica>
        var servers: Informer<ModelServer>
        var tenants: Informer<Tenant>
        var deployments: Informer<Deployment>

        /// The informer of `kind`; nil for a kind the leader does not follow.
        func follower(of kind: ResourceKind) -> (any CurrentFollower)? {
            switch kind {
            case .node: return nodes
            case .replica: return replicas
            case .modelServer: return servers
            case .tenant: return tenants
            case .deployment: return deployments
            default: return nil
            }
        }

        /// The kinds, in the order they are listed.
        static let kinds: [ResourceKind] = [.node, .replica, .modelServer, .tenant, .deployment]
    }

    /// The nodes' heartbeats.
    let heartbeats: HeartbeatWatcher
    /// Rung at every change of any cache.
    let wakeup: Wakeup
    private let store: ResourceStore
    private let logger: Logger
    private let state: Locked<State>

    private struct State {
        var informers: Informers
        /// Per kind, the task ringing the doorbell at its informer's changes.
        var followers: [ResourceKind: Task<Void, Never>] = [:]
        var heartbeatTask: Task<Void, Never>?
        var phase = Phase.idle
    }

    private enum Phase {
        case idle, running, stopped
    }

    /// Makes the caches; nothing is read until ``start()`` or ``ready(for:within:)``.
    init(store: ResourceStore, logger: Logger) {
        self.store = store
        self.logger = logger
        let wakeup = Wakeup()
        self.wakeup = wakeup
        self.heartbeats = HeartbeatWatcher(heartbeats: NodeHeartbeats(store: store), logger: logger) { wakeup.ring() }
        self.state = Locked(
            State(
                informers: Informers(
                    nodes: Informer(store: store, logger: logger), replicas: Informer(store: store, logger: logger),
                    servers: Informer(store: store, logger: logger), tenants: Informer(store: store, logger: logger),
                    deployments: Informer(store: store, logger: logger))))
    }

    /// The informers now.
    var informers: Informers { state.withLock { $0.informers } }

    /// Starts listing and watching (once).
    func start() {
        state.withLock { s in
            guard s.phase == .idle else { return }
            s.phase = .running
            let heartbeats = self.heartbeats
            s.heartbeatTask = Task { await heartbeats.run() }
            for kind in Informers.kinds {
                if let informer = s.informers.follower(of: kind) { s.followers[kind] = launch(informer) }
            }
        }
    }

    /// Stops every cache; a later ``start()`` does nothing.
    func stop() {
        state.withLock { s in
            s.phase = .stopped
            s.heartbeatTask?.cancel()
            for task in s.followers.values { task.cancel() }
            for kind in Informers.kinds { s.informers.follower(of: kind)?.stop() }
        }
    }

    /// The informers a term whose leader key was created at `revision` may decide on, and the
    /// kinds whose informer lists for it. Each informer that has seen `revision`, or that etcd
    /// confirms current, within `wait` is kept; each other is replaced by a new one, whose list
    /// is read after the key was created and so holds every earlier write (the term waits for it
    /// to sync, as for a first list). On the first call the caches start, and every informer
    /// lists for the first time.
    func ready(for revision: Int64, within wait: Duration) async -> (informers: Informers, listed: [ResourceKind]) {
        let (current, phase) = state.withLock { s in (s.informers, s.phase) }
        switch phase {
        case .idle:
            start()
            return (current, Informers.kinds)
        case .stopped:
            return (current, [])
        case .running:
            break
        }
        let deadline = ContinuousClock.now + wait
        let behind = await withTaskGroup(of: ResourceKind?.self) { group in
            for kind in Informers.kinds {
                guard let informer = current.follower(of: kind) else { continue }
                group.addTask { await Self.reaches(informer, revision, by: deadline) ? nil : kind }
            }
            var behind: [ResourceKind] = []
            for await kind in group { if let kind { behind.append(kind) } }
            return behind
        }
        let informers = state.withLock { s -> Informers in
            guard s.phase == .running else { return s.informers }
            for kind in behind {
                switch kind {
                case .node: s.followers[kind] = renew(&s.informers.nodes)
                case .replica: s.followers[kind] = renew(&s.informers.replicas)
                case .modelServer: s.followers[kind] = renew(&s.informers.servers)
                case .tenant: s.followers[kind] = renew(&s.informers.tenants)
                case .deployment: s.followers[kind] = renew(&s.informers.deployments)
                default: break
                }
            }
            return s.informers
        }
        return (informers, Informers.kinds.filter(behind.contains))
    }

    /// Whether `informer` has seen `revision` by `deadline`: it has, or etcd confirms its cache
    /// (``Informer/confirmCurrent()``, a read after the key was created, so at a later revision),
    /// or it gets there by the deadline (changes on their way), or etcd confirms it then.
    private static func reaches(_ informer: some CurrentFollower, _ revision: Int64, by deadline: ContinuousClock.Instant) async -> Bool {
        func seen() -> Bool { informer.lastSeenRevision >= revision }
        func confirmed() async -> Bool { ((try? await informer.confirmCurrent()) ?? false) && seen() }
        if seen() { return true }
        if await confirmed() { return true }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await informer.waitUntilSeen(revision) }
            group.addTask { try? await Task.sleep(until: deadline) }
            await group.next()
            group.cancelAll()
        }
        if seen() { return true }
        return await confirmed()
    }

    /// Stops `informer` and puts a new one of its kind, started, in its place; returns the task
    /// ringing the doorbell at the new one's changes (the old one's ends with its informer).
    private func renew<R: Resource>(_ informer: inout Informer<R>) -> Task<Void, Never> {
        informer.stop()
        informer = Informer(store: store, logger: logger)
        return launch(informer)
    }

    /// Starts `informer`; returns a task ringing the doorbell at its changes.
    private func launch(_ informer: any CurrentFollower) -> Task<Void, Never> {
        informer.start()
        let wakeup = self.wakeup
        let changes = informer.changes()
        return Task {
            for await _ in changes { wakeup.ring() }
        }
    }
}

/// An informer seen without its kind, as ``ClusterCache`` starts, stops and checks it.
protocol CurrentFollower: RevisionFollower {
    /// ``Informer/confirmCurrent()``.
    func confirmCurrent() async throws -> Bool
    /// ``Informer/start()``.
    func start()
    /// ``Informer/stop()``.
    func stop()
    /// ``Informer/changes()``.
    func changes() -> AsyncStream<Void>
}

extension Informer: CurrentFollower {}
