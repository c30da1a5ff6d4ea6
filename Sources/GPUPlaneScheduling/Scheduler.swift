import EtcdClient
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import GPUPlaneStore
import Logging
import ServiceLifecycle
import GPUPlaneSystem

/// The scheduler daemon's service: campaigns for leadership over etcd and, while it leads,
/// runs a ``LeaderSession`` (placement, preemption, node lifecycle, usage meter, warm pool).
/// Replicas that don't lead stand by in the campaign.
///
/// - Every replica holds its own lease (``Configuration/leaseTTL``, 3 s by default) kept alive
///   while it runs; the leader's election key is attached to it.
/// - On graceful shutdown (SIGTERM) the leader resigns at once (its key is deleted and its
///   lease revoked), so a standby takes over without waiting for the lease to expire.
/// - When the lease is lost (a renewal is refused, or none succeeded within the TTL) the
///   session is cancelled at once and the replica campaigns again with a new lease. A leader
///   also stops when no renewal reached it within the TTL less a margin (``LeaseDeadline``); a
///   standby keeps its place in the election for as long as etcd keeps its lease.
/// - Every write of the session carries the leader key's fence, so a deposed leader that
///   still believes it leads (paused, partitioned) can never commit.
/// - The caches the sessions read (``ClusterCache``) start with the first term won and are
///   kept until the replica stops: a term won again lists only the kinds whose cache neither
///   saw its leader key's revision nor was confirmed by a read within ``cacheCatchUp``.
public final class Scheduler: Service, Sendable {
    /// Settings of one scheduler replica.
    public struct Configuration: Sendable {
        /// This replica's name, proclaimed as the election's value (host name and pid by default).
        public var identity: String
        /// The election's name in etcd.
        public var electionName: String
        /// The lease's time to live, seconds (etcd rounds very small values up).
        public var leaseTTL: Int64
        /// What the session does while leading.
        public var session: LeaderSession.Configuration
        /// The pause before campaigning again after a lost lease or a failed session.
        public var retryDelay: Duration

        /// Makes a configuration.
        public init(
            identity: String = Scheduler.defaultIdentity(), electionName: String = Scheduler.defaultElectionName,
            leaseTTL: Int64 = 3, session: LeaderSession.Configuration = .init(),
            retryDelay: Duration = .milliseconds(200)
        ) {
            self.identity = identity
            self.electionName = electionName
            self.leaseTTL = leaseTTL
            self.session = session
            self.retryDelay = retryDelay
        }
    }

    /// Where this replica stands.
    public enum Role: Sendable, Hashable, CustomStringConvertible {
        /// Not yet campaigning.
        case starting
        /// Campaigning; another replica leads (or none yet).
        case standby
        /// Leading; `revision` is the leader key's create revision, written into every binding.
        case leader(revision: Int64)
        /// Stopped after graceful shutdown.
        case stopped

        public var description: String {
            switch self {
            case .starting: return "starting"
            case .standby: return "standby"
            case .leader(let revision): return "leader (revision \(revision))"
            case .stopped: return "stopped"
            }
        }
    }

    /// The election every scheduler replica campaigns in.
    public static let defaultElectionName = KeySpace.schedulerElection

    /// `<host>-<pid>`.
    public static func defaultIdentity() -> String {
        "\(ProcessInfo.processInfo.hostName)-\(ProcessInfo.processInfo.processIdentifier)"
    }

    /// The settings.
    public let configuration: Configuration
    /// The store the session writes through.
    public let store: ResourceStore
    /// The pipeline the session places with.
    public let pipeline: Pipeline
    private let logger: Logger
    /// The events of every term this process leads: one recorder, so events recorded in a
    /// term that lapsed before they were flushed are written by the next.
    private let events = EventRecorder()
    /// The caches every term reads, from the first term won until the replica stops: a term
    /// won again lists only what its caches have not seen (``ClusterCache/ready(for:within:)``).
    private let caches: ClusterCache
    private let onStatus: @Sendable (String) -> Void
    private let state = Locked(State())

    private struct State {
        var role: Role = .starting
        var terms = 0
        var shutdown = false
        var shutdownWaiters: [CheckedContinuation<Void, Never>] = []
        var session: LeaderSession?
    }

    /// Makes a scheduler replica.
    ///
    /// - Parameters:
    ///   - onStatus: called with a line for `sd_notify` `STATUS=` whenever the role changes
    ///     ("leader (revision 42)", "standby").
    public init(
        store: ResourceStore, pipeline: Pipeline, configuration: Configuration = .init(),
        logger: Logger = Logger(label: "gpuplane.scheduler"), onStatus: @escaping @Sendable (String) -> Void = { _ in }
    ) {
        self.store = store
        self.pipeline = pipeline
        self.configuration = configuration
        self.logger = logger
        self.onStatus = onStatus
        self.caches = ClusterCache(store: store, logger: logger)
    }

    /// How long a term won again waits for a kept cache to see its leader key's revision (or
    /// to be confirmed by a read) before listing that kind again.
    static let cacheCatchUp = Duration.milliseconds(500)

    /// Where this replica stands now.
    public var role: Role { state.withLock { $0.role } }

    /// Whether this replica leads now.
    public var isLeader: Bool {
        if case .leader = role { return true }
        return false
    }

    /// Leadership terms won so far.
    public var termsWon: Int { state.withLock { $0.terms } }

    /// The session of the current term, while leading (tests read its counters).
    public var currentSession: LeaderSession? { state.withLock { $0.session } }

    /// Starts graceful shutdown as SIGTERM would: resign at once and return from ``run()``.
    public func shutdown() {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.shutdown = true
            defer { s.shutdownWaiters.removeAll() }
            return s.shutdownWaiters
        }
        for w in waiters { w.resume() }
    }

    /// Campaigns and leads until graceful shutdown (or cancellation).
    public func run() async throws {
        try await withGracefulShutdownHandler {
            try await self.campaignLoop()
        } onGracefulShutdown: {
            self.shutdown()
        }
    }

    // MARK: Terms

    private enum TermEnd: Sendable {
        case shutdown
        case leaseLost(String)
        case failed(String)
    }

    private func campaignLoop() async throws {
        defer {
            caches.stop()
            setRole(.stopped)
        }
        while !isShuttingDown, !Task.isCancelled {
            let lease: Etcd.LeaseGrant
            do {
                lease = try await store.client.grantLease(ttl: configuration.leaseTTL)
            } catch {
                logger.warning("cannot grant a lease; retrying", metadata: ["error": "\(error)"])
                try? await sleepUnlessShutdown(configuration.retryDelay * 5)
                continue
            }
            let leader = Locked<Etcd.LeaderKey?>(nil)
            let end = await term(lease: lease, leader: leader)
            // The term said it stepped down as it ended (see ``term(lease:leader:)``).
            state.withLock { $0.session = nil }
            // Resign at once: deleting the key hands over now; revoking the lease cleans up.
            if let key = leader.withLock({ $0 }) {
                do { try await store.client.resign(key) } catch {
                    logger.warning("resign failed; the lease will expire", metadata: ["error": "\(error)"])
                }
            }
            try? await store.client.revokeLease(lease.id)
            if case .shutdown = end {
                logger.info("stopped; resigned", metadata: ["lease": "\(lease.id)"])
                return
            }
            try? await sleepUnlessShutdown(configuration.retryDelay)
        }
    }

    /// One lease: keep it alive, campaign, lead; returns at the first of shutdown, lease loss
    /// or session failure, with every child task cancelled.
    private func term(lease: Etcd.LeaseGrant, leader: Locked<Etcd.LeaderKey?>) async -> TermEnd {
        let lastRenewal = Locked(ContinuousClock.now)
        let ttl = Duration.seconds(max(lease.ttl, 1))
        // The children still running, by name: logged if the term's end waits on them long.
        let running = Locked(Set(["shutdown-wait", "keep-alive", "lease-deadline", "campaign-and-session"]))
        return await withTaskGroup(of: TermEnd.self) { group in
            group.addTask {
                defer { running.withLock { _ = $0.remove("shutdown-wait") } }
                await self.waitForShutdown()
                return .shutdown
            }
            group.addTask {
                defer { running.withLock { _ = $0.remove("keep-alive") } }
                // Renewals; the stream throws when etcd says the lease is gone.
                do {
                    for try await _ in self.store.client.keepAlive(lease.id, ttl: lease.ttl) {
                        lastRenewal.withLock { $0 = ContinuousClock.now }
                    }
                    return Task.isCancelled ? .shutdown : .leaseLost("keep-alive ended")
                } catch {
                    return .leaseLost("keep-alive failed: \(error)")
                }
            }
            group.addTask {
                defer { running.withLock { _ = $0.remove("lease-deadline") } }
                // A local deadline, once the campaign is won (``LeaseDeadline``): no renewal
                // within the TTL (less a margin) means the lease may be gone in etcd already;
                // stop leading before anyone else can lead.
                let deadline = LeaseDeadline(ttl: ttl)
                while !Task.isCancelled {
                    let leading = leader.withLock { $0 } != nil
                    let since = ContinuousClock.now - lastRenewal.withLock { $0 }
                    if let why = deadline.passed(leading: leading, sinceRenewal: since) { return .leaseLost(why) }
                    try? await Task.sleep(for: .milliseconds(50))
                }
                return .shutdown
            }
            group.addTask {
                defer { running.withLock { _ = $0.remove("campaign-and-session") } }
                do {
                    self.setRole(.standby)
                    let key = try await self.store.client.campaign(
                        self.configuration.electionName, lease: lease.id, value: self.configuration.identity)
                    let wonAt = ContinuousClock.now
                    leader.withLock { $0 = key }
                    let (informers, listed) = await self.caches.ready(for: key.revision, within: Self.cacheCatchUp)
                    for kind in listed { SchedulerMetrics.cacheLists[kind]?.increment() }
                    try Task.checkCancellation()
                    let session = LeaderSession(
                        store: self.store, pipeline: self.pipeline, fence: LeaderFence(key),
                        configuration: self.configuration.session, events: self.events, cache: self.caches,
                        informers: informers, wonAt: wonAt, logger: self.logger)
                    self.state.withLock {
                        $0.session = session
                        $0.terms += 1
                    }
                    self.setRole(.leader(revision: key.revision))
                    self.logger.notice(
                        "leading",
                        metadata: [
                            "revision": "\(key.revision)", "identity": "\(self.configuration.identity)",
                            "listed": "\(listed.map(\.rawValue).joined(separator: ","))",
                        ])
                    try await session.run()
                    return Task.isCancelled ? .shutdown : .failed("session returned")
                } catch let error as SchedulerError where error.code == .leadershipLost {
                    return .leaseLost(error.message)
                } catch {
                    if Task.isCancelled { return .shutdown }
                    return .failed("\(error)")
                }
            }
            let first = await group.next() ?? .shutdown
            group.cancelAll()
            // Not leading from here on, and said so at once: a child stuck in an etcd request
            // ends only at its timeout, and resigning after it may wait out its own (a leader
            // cut off from etcd in the fault suite kept reporting itself leader for 30 s).
            // Whatever such a child still sends is fenced on the election key.
            switch first {
            case .shutdown:
                break
            case .leaseLost(let why):
                self.setRole(.standby)
                self.logger.warning("leadership or lease lost; campaigning again", metadata: ["why": "\(why)"])
            case .failed(let why):
                self.setRole(.standby)
                self.logger.error("session failed; campaigning again", metadata: ["error": "\(why)"])
            }
            // Children end promptly on cancellation; wait so no write outlives the term. One
            // that does not is named in the log (every 5 s), so a stuck term can be traced.
            let logger = self.logger
            let watchdog = Task {
                while true {
                    try await Task.sleep(for: .seconds(5))
                    let left = running.withLock { $0 }.sorted()
                    logger.warning("term ended but children still run", metadata: ["children": "\(left.joined(separator: ","))"])
                }
            }
            while await group.next() != nil {}
            watchdog.cancel()
            return isShuttingDown ? .shutdown : first
        }
    }

    // MARK: Pieces

    private var isShuttingDown: Bool { state.withLock { $0.shutdown } }

    private func setRole(_ role: Role) {
        let changed = state.withLock { s -> Bool in
            guard s.role != role, s.role != .stopped else { return false }
            s.role = role
            return true
        }
        if changed {
            if case .leader = role {
                SchedulerMetrics.leader.record(1)
                SchedulerMetrics.terms.increment()
            } else {
                SchedulerMetrics.leader.record(0)
            }
            onStatus(role.description)
        }
    }

    private func waitForShutdown() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now = state.withLock { s -> Bool in
                    if s.shutdown { return true }
                    s.shutdownWaiters.append(c)
                    return false
                }
                if now { c.resume() }
            }
        } onCancel: {
            // Wake every waiter; those whose task goes on check `shutdown` themselves.
            let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
                defer { s.shutdownWaiters.removeAll() }
                return s.shutdownWaiters
            }
            for w in waiters { w.resume() }
        }
    }

    private func sleepUnlessShutdown(_ duration: Duration) async throws {
        let deadline = ContinuousClock.now + duration
        while ContinuousClock.now < deadline, !isShuttingDown {
            try await Task.sleep(for: min(.milliseconds(50), deadline - ContinuousClock.now))
        }
    }
}


extension Scheduler {
    /// Parses warm-pool entries `slug=count` (as the `warm-pool` setting lists them) against
    /// the catalog: only Mode 2 and Mode 3 slugs have model servers.
    /// - Throws: ``SchedulerError/Code/invalidConfiguration`` naming the bad entry.
    public static func parseWarmPool(_ entries: [String], catalog: Catalog) throws(SchedulerError) -> [String: Int] {
        var pool: [String: Int] = [:]
        for entry in entries {
            let parts = entry.split(separator: "=", maxSplits: 1).map { $0.trimmingWhitespace() }
            guard parts.count == 2, let count = Int(parts[1]), count >= 0 else {
                throw SchedulerError(.invalidConfiguration, "warm-pool entry '\(entry)' is not slug=count")
            }
            guard let model = catalog.model(parts[0]), model.mode != .dedicated else {
                throw SchedulerError(.invalidConfiguration, "warm-pool slug '\(parts[0])' is not a Mode 2 or Mode 3 catalog model")
            }
            pool[model.slug] = count
        }
        return pool
    }
}

extension Committer {
    /// A committer fenced on the leadership held with `leader` (the election's key).
    convenience init(store: ResourceStore, leader: Etcd.LeaderKey, configuration: Configuration, logger: Logger) {
        self.init(store: store, fence: LeaderFence(leader), configuration: configuration, logger: logger)
    }
}
