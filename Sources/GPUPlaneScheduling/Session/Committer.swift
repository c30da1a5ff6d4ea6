#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneSystem
import Logging

/// The one way the leader writes. Every step of the pass hands it ``WriteUnit``s; it
///
/// - records their notes at once (``WriteUnit/notes``: events that happen whether or not
///   anything commits);
/// - splits the units into transactions of at most ``Configuration/maxOperationsPerTransaction``
///   writes, never splitting a unit, and sends up to ``Configuration/transactionsInFlight``
///   at once, nothing more after the first that fails; a replica binding to a model server
///   created in an earlier transaction waits for that one's answer (``commit(_:)``);
/// - fences every transaction on the leader key (``Tag/leaderFence``), so once the term is
///   over nothing commits, and bumps each guarded key once (``Tag/gpuGuard``);
/// - classifies a failure by its code and condition tag, never by its text (``Failure``);
/// - records the units' events once they committed, and writes the events that are due
///   (``flushEvents(now:)``) under the events' rotating lease;
/// - remembers, per kind, the revision the informers must reach before the next pass.
final class Committer: Sendable {
    /// Knobs.
    struct Configuration: Sendable {
        /// Writes in one transaction at most (etcd's `--max-txn-ops` is 128 by default; the
        /// fence and the guards count too).
        var maxOperationsPerTransaction = 100
        /// Transactions of one ``Committer/commit(_:)`` sent before the first is answered.
        var transactionsInFlight = 4
        /// Repeats of an event are written at most this often.
        var eventFlushInterval: Duration = .seconds(10)
        /// How long etcd keeps an event after its last write.
        var eventTTL: Duration = .seconds(3600)
    }

    /// The tags of the conditions the leader's transactions carry.
    enum Tag {
        /// The leader key's fence: fails once another scheduler leads.
        static let leaderFence = StoreTransaction.ConditionTag("scheduler.leader-fence")
        /// A tenant's GPU admission key moved after the read a decision was made on.
        static let gpuGuard = StoreTransaction.ConditionTag("scheduler.gpu-admission-guard")
        /// The meter's cursor moved under this leader.
        static let meterCursor = StoreTransaction.ConditionTag("scheduler.meter-cursor")
    }

    /// The reasons given with those conditions, for logs.
    enum Reason {
        static let leaderFence = "scheduler leadership"
        static let gpuGuard = "another write took GPUs of this tenant meanwhile"
        static let meterCursor = "the meter cursor is where this leader left it"
    }

    /// What a failed transaction means for the pass.
    enum Failure: Equatable {
        /// The fence (or another condition only a new leader changes) did not hold: this
        /// term is over.
        case leadershipLost
        /// A guarded key moved: a GPU admission of the tenant committed meanwhile; decide
        /// again on the next pass.
        case raced
        /// An object was not as the decision read it: the informer of `kind` must reach
        /// `revision` (when known) before the next pass decides again.
        case stale(ResourceKind?, revision: Int64?)
        /// Anything else (etcd unavailable, a value refused): try again on a later pass.
        case other
    }

    /// Counters, for ``LeaderSession/Statistics``.
    struct Counters: Sendable, Hashable {
        var transactions = 0
        var bindings = 0
        var conflicts = 0
        var preemptions = 0
    }

    let store: ResourceStore
    /// The leadership every write is fenced on.
    let fence: LeaderFence
    let configuration: Configuration
    /// The events to write; shared by the terms of one scheduler process (see ``LeaderSession``).
    let events: EventRecorder
    let logger: Logger
    private let eventLease: RotatingLease
    private let state = Locked(State())

    private struct State {
        var counters = Counters()
        /// kind → the revision its informer must reach before the next pass.
        var awaited: [ResourceKind: Int64] = [:]
    }

    init(store: ResourceStore, fence: LeaderFence, configuration: Configuration, events: EventRecorder = EventRecorder(), logger: Logger) {
        self.events = events
        self.store = store
        self.fence = fence
        self.configuration = configuration
        self.logger = logger
        self.eventLease = RotatingLease(ttl: configuration.eventTTL)
    }

    /// The counters so far.
    var counters: Counters { state.withLock { $0.counters } }

    /// kind → the revision its informer must reach before the next pass.
    var awaited: [ResourceKind: Int64] { state.withLock { $0.awaited } }

    /// Forgets the revisions of `reached` that are still the ones awaited.
    func reached(_ reached: [ResourceKind: Int64]) {
        state.withLock { s in
            for (kind, revision) in reached where s.awaited[kind] == revision { s.awaited.removeValue(forKey: kind) }
        }
    }

    private var limit: Int { max(1, configuration.maxOperationsPerTransaction) }

    // MARK: Units

    /// Commits `units` (see the type's description). True when anything committed.
    ///
    /// Up to ``Configuration/transactionsInFlight`` transactions are sent at once (a pass's
    /// hundreds of bindings otherwise wait on etcd one round trip after another). Every write is
    /// a compare-and-swap, so sending them together never commits what sending them in turn
    /// would refuse; the one order that matters, a replica bound to a model server created in
    /// an earlier transaction, is kept: that transaction waits until the earlier ones are
    /// answered, and is not sent when one of them failed. After the first failure nothing more
    /// is sent.
    /// - Throws: ``SchedulerError/Code/leadershipLost`` when the fence no longer holds.
    @discardableResult
    func commit(_ units: [WriteUnit]) async throws -> Bool {
        for unit in units {
            for note in unit.notes { events.record(note) }
        }
        let units = units.filter { !$0.isNotesOnly }
        guard !units.isEmpty else { return false }
        let chunks = Self.chunks(units, limit: limit)
        let inFlight = max(1, configuration.transactionsInFlight)
        let outcomes = await withTaskGroup(of: ChunkOutcome.self, returning: [ChunkOutcome].self) { group in
            var outcomes: [ChunkOutcome] = []
            var sent = 0
            // Model servers created by the transactions sent and not yet answered.
            var creating: [Int: Set<String>] = [:]
            func receive() async {
                guard let outcome = await group.next() else { return }
                creating.removeValue(forKey: outcome.index)
                outcomes.append(outcome)
            }
            for (index, chunk) in chunks.enumerated() {
                // Room, and the answers of the transactions creating a server this one binds to.
                let binds = Set(chunk.flatMap { $0.bindings.compactMap(\.modelServer) })
                while sent > outcomes.count,
                    sent - outcomes.count >= inFlight || creating.values.contains(where: { !$0.isDisjoint(with: binds) })
                {
                    await receive()
                }
                if outcomes.contains(where: { !$0.committed }) { break }
                creating[index] = Set(chunk.flatMap { unit in unit.ops.compactMap { op -> String? in
                    if case .create(let object) = op, object is ModelServer { return object.metadata.name }
                    return nil
                } })
                sent += 1
                group.addTask { await self.commitChunk(chunk, index: index) }
            }
            while outcomes.count < sent { await receive() }
            return outcomes.sorted { $0.index < $1.index }
        }
        if outcomes.contains(where: { $0.failure == .leadershipLost }) {
            throw SchedulerError(.leadershipLost, "a fenced write was refused: \(fence.key) no longer leads")
        }
        return outcomes.contains { $0.committed }
    }

    /// How one transaction of ``commit(_:)`` ended.
    private struct ChunkOutcome: Sendable {
        var index: Int
        /// Why it did not commit; nil when it did.
        var failure: Failure?
        var committed: Bool { failure == nil }
    }

    /// Commits one transaction of units; counts it, records its events and the revision the
    /// informers must reach.
    private func commitChunk(_ chunk: [WriteUnit], index: Int) async -> ChunkOutcome {
        var txn = StoreTransaction()
        txn.require(fence, reason: Reason.leaderFence, tag: Tag.leaderFence)
        var kinds = Set<ResourceKind>()
        // One bump per key (etcd refuses a key written twice in one transaction), on the
        // oldest revision any of the chunk's decisions read it at.
        var guards: [String: Int64] = [:]
        do {
            for unit in chunk {
                for op in unit.ops {
                    try txn.add(op)
                    kinds.insert(op.kind)
                }
                for guarded in unit.guards { guards[guarded.key] = min(guards[guarded.key] ?? .max, guarded.revision) }
            }
        } catch {
            let error = error as? StoreError ?? StoreError(code: .invalid, message: "\(error)")
            count(.other, error)
            return ChunkOutcome(index: index, failure: .other)
        }
        for (key, revision) in guards.sorted(by: { $0.key < $1.key }) {
            txn.bump(key, unchangedSince: revision, reason: Reason.gpuGuard, tag: Tag.gpuGuard)
        }
        do {
            let result = try await store.commit(txn)
            let bound = chunk.reduce(0) { $0 + $1.bindings.count }
            let preempting = chunk.filter { $0.events.contains { $0.reason == EventRecorder.Reason.preempting } }.count
            SchedulerMetrics.transactions.increment()
            SchedulerMetrics.bindings.increment(by: bound)
            SchedulerMetrics.preemptions.increment(by: preempting)
            SchedulerMetrics.autoscaleDecisions.increment(
                by: chunk.reduce(0) { $0 + $1.events.filter { $0.reason == Autoscaler.Reason.scaled }.count })
            state.withLock { s in
                s.counters.transactions += 1
                s.counters.bindings += bound
                s.counters.preemptions += preempting
                for kind in kinds { s.awaited[kind] = max(s.awaited[kind] ?? 0, result.revision) }
            }
            for unit in chunk {
                for occurrence in unit.events { events.record(occurrence) }
            }
            return ChunkOutcome(index: index, failure: nil)
        } catch let error as StoreError {
            let failure = Self.classify(error, kinds: chunk.flatMap { $0.ops.map(\.kind) })
            if failure != .leadershipLost { count(failure, error) }
            return ChunkOutcome(index: index, failure: failure)
        } catch {
            let error = StoreError(code: .unavailable, message: "\(error)")
            count(.other, error)
            return ChunkOutcome(index: index, failure: .other)
        }
    }

    /// `units` in transactions of at most `limit` writes (operations and guards), in order; a
    /// unit larger than `limit` goes alone.
    static func chunks(_ units: [WriteUnit], limit: Int) -> [[WriteUnit]] {
        let limit = max(1, limit)
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
        return chunks.filter { !$0.isEmpty }
    }

    /// What `error` of a transaction whose operations are of `kinds` (in order) means.
    static func classify(_ error: StoreError, kinds: [ResourceKind]) -> Failure {
        switch error.code {
        case .preconditionFailed where error.failedConditionTag == Tag.gpuGuard:
            return .raced
        case .preconditionFailed:
            return .leadershipLost
        case .conflict, .notFound, .alreadyExists:
            let kind = error.failedIndex.flatMap { $0 < kinds.count ? kinds[$0] : nil }
            return .stale(kind, revision: error.currentVersion.flatMap(Int64.init))
        default:
            return .other
        }
    }

    /// Counts a failed transaction that does not end the term, and remembers the revision a
    /// stale one's informer must reach.
    private func count(_ failure: Failure, _ error: StoreError) {
        switch failure {
        case .leadershipLost:
            return
        case .raced:
            SchedulerMetrics.conflicts.increment()
            state.withLock { $0.counters.conflicts += 1 }
            logger.debug("a GPU admission of the tenant committed meanwhile; deciding again on the next pass")
        case .stale(let kind, let revision):
            state.withLock { s in
                SchedulerMetrics.conflicts.increment()
                s.counters.conflicts += 1
                if let kind, let revision { s.awaited[kind] = max(s.awaited[kind] ?? 0, revision) }
            }
            logger.debug("transaction conflict; retrying on the next pass", metadata: ["error": "\(error)"])
        case .other:
            logger.warning("transaction failed; retrying on the next pass", metadata: ["error": "\(error)"])
        }
    }

    // MARK: Create-if-absent and raw keys

    /// Creates those of `objects` that do not exist yet, in fenced transactions of at most
    /// ``Configuration/maxOperationsPerTransaction``; returns the ones it created. Existing
    /// ones (an earlier leader wrote them) are left as they are.
    /// - Throws: ``SchedulerError/Code/leadershipLost`` when the fence no longer holds; other
    ///   store failures as they are.
    func createIfAbsent<R: Resource>(_ objects: [R]) async throws -> [R] {
        var remaining = objects[...]
        var created: [R] = []
        while !remaining.isEmpty {
            var chunk = Array(remaining.prefix(limit))
            remaining = remaining.dropFirst(chunk.count)
            var committed = false
            while !committed, !chunk.isEmpty {
                var txn = StoreTransaction()
                txn.require(fence, reason: Reason.leaderFence, tag: Tag.leaderFence)
                for object in chunk { try txn.create(object) }
                do {
                    _ = try await store.commit(txn)
                    committed = true
                } catch let error as StoreError where error.code == .alreadyExists {
                    // Some were written before (by an earlier leader): keep only the absent ones.
                    let present = try await store.existingKeys(of: chunk)
                    chunk.removeAll { present.contains($0.storageKey) }
                } catch let error as StoreError where Self.classify(error, kinds: []) == .leadershipLost {
                    throw SchedulerError(.leadershipLost, "a fenced write was refused: \(fence.key) no longer leads")
                }
            }
            created += chunk
        }
        return created
    }

    /// Moves the meter's `cursor` to `intervalStart` if its mod revision is still `revision`
    /// (0: never written), fenced; returns its new mod revision.
    /// - Throws: ``SchedulerError/Code/leadershipLost`` when the fence or the cursor moved: only
    ///   another leader moves either.
    func move(_ cursor: MeterCursor, to intervalStart: Int64, ifAt revision: Int64) async throws -> Int64 {
        var txn = StoreTransaction()
        txn.require(fence, reason: Reason.leaderFence, tag: Tag.leaderFence)
        cursor.move(to: intervalStart, ifAt: revision, in: &txn, reason: Reason.meterCursor, tag: Tag.meterCursor)
        do {
            return try await store.commit(txn).revision
        } catch let error as StoreError where error.code == .preconditionFailed || error.code == .conflict {
            throw SchedulerError(.leadershipLost, "\(cursor.key) or the fence changed under this leader")
        }
    }

    // MARK: Events

    /// Writes the events that are due, in fenced transactions.
    /// - Throws: ``SchedulerError/Code/leadershipLost`` when the fence no longer holds.
    func flushEvents(now: Date = Date()) async throws {
        let due = events.due(now: now, interval: configuration.eventFlushInterval.seconds, forgetAfter: configuration.eventTTL.seconds)
        guard !due.isEmpty else { return }
        let lease = try await eventLease.lease(in: store)
        var start = 0
        while start < due.count {
            let chunk = Array(due[start..<min(start + limit, due.count)])
            start += chunk.count
            var txn = StoreTransaction()
            txn.require(fence, reason: Reason.leaderFence, tag: Tag.leaderFence)
            for (_, op) in chunk { try txn.add(op, lease: lease) }
            do {
                let result = try await store.commit(txn)
                events.committed(chunk.map(\.0), revision: result.revision, now: now)
            } catch let error as StoreError {
                if Self.classify(error, kinds: []) == .leadershipLost {
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
}
