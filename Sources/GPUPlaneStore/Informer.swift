import EtcdClient
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import Logging
import GPUPlaneSystem
import StreamingJSON

/// A change an informer saw, in etcd revision order.
public enum InformerEvent<R: Resource>: Sendable {
    /// The object appeared (or was in the cache when the subscriber joined).
    case added(R)
    /// The object changed.
    case updated(old: R, new: R)
    /// The object was deleted; this is its last known state.
    case deleted(R)

    /// The object the event is about (the new one for updates).
    public var object: R {
        switch self {
        case .added(let o), .deleted(let o): return o
        case .updated(_, let new): return new
        }
    }
}

/// Where an object sits in an informer's cache.
public struct ObjectKey: Hashable, Sendable, CustomStringConvertible {
    /// The tenant.
    public var tenant: String
    /// The name.
    public var name: String
    /// Makes a key.
    public init(tenant: String, name: String) {
        self.tenant = tenant
        self.name = name
    }
    public var description: String { "\(tenant)/\(name)" }
}

extension ObjectKey: Comparable {
    /// By tenant, then name.
    public static func < (a: ObjectKey, b: ObjectKey) -> Bool {
        a.tenant != b.tenant ? a.tenant < b.tenant : a.name < b.name
    }
}

/// How far an ``Informer`` of some kind has followed etcd, seen without its kind.
public protocol RevisionFollower: Sendable {
    /// The revision its cache reflects.
    var lastSeenRevision: Int64 { get }
    /// Returns once ``lastSeenRevision`` reaches `revision` (or it cannot: see
    /// ``Informer/waitUntilSeen(_:)``).
    func waitUntilSeen(_ revision: Int64) async
}

/// List-then-watch of one kind (optionally one tenant), keeping a local cache and telling
/// subscribers what changed, in revision order.
///
/// It lists, then watches from the list's revision + 1; when the watch reports compaction, it
/// lists again and delivers the difference with its cache as events, so subscribers never miss
/// a final state (intermediate states lost to compaction are skipped, as with any informer).
///
/// ```swift
/// let informer = Informer<Replica>(store: store)
/// informer.start()
/// try await informer.waitUntilSynced()
/// for await event in informer.events() { … }
/// ```
public final class Informer<R: Resource>: RevisionFollower {
    /// The store it reads.
    public let store: ResourceStore
    /// The tenant it follows, nil for all.
    public let tenant: String?
    private let logger: Logger
    private let state = Locked(State())
    /// Subscribers whose consumer stopped, forgotten the next time `state` is taken: the
    /// informer yields under `state`, so termination handlers must not take it
    /// (``TerminationQueue``).
    private let forgotten = TerminationQueue<UUID>()
    /// Where the cached objects' equal strings share one copy (a node's GPU product and PCI
    /// ids, label values, its GPUs' UUIDs in spec and status).
    private let strings = StringTable()

    private struct State {
        /// The objects by key.
        private(set) var cache: [ObjectKey: R] = [:]
        /// The keys by tenant, then name, kept in step with the cache one change at a time (a
        /// binary search and a shift of small keys), so ``list()`` never sorts.
        private(set) var keys: [ObjectKey] = []
        /// ``list()``'s answer in the order of `keys`, kept in step with them once built: a
        /// change puts, inserts or removes its object in place (copying the array once when a
        /// ``list()`` answer still holds it). The stored kinds box their fields
        /// (``CopyOnWrite``), so an element is a reference and a shift moves a few words each.
        private var ordered: [R]?
        var revision: Int64 = 0
        var synced = false
        var failure: StoreError?
        var subscribers: [UUID: AsyncStream<InformerEvent<R>>.Continuation] = [:]
        /// ``changes()``'s subscribers: told that something changed, not what.
        var signals: [UUID: AsyncStream<Void>.Continuation] = [:]
        var waiters: [UUID: CheckedContinuation<Void, any Error>] = [:]
        /// ``waitUntilSeen(_:)``'s callers: the revision each waits for.
        var revisionWaiters: [UUID: (revision: Int64, continuation: CheckedContinuation<Void, Never>)] = [:]
        var task: Task<Void, Never>?
        /// Whether ``run()`` runs.
        var running = false
        var relists = 0

        /// Puts `object` at `key`; returns what was there.
        mutating func put(_ key: ObjectKey, _ object: R) -> R? {
            let old = cache.updateValue(object, forKey: key)
            let at = position(of: key)
            if old == nil {
                keys.insert(key, at: at)
                ordered?.insert(object, at: at)
            } else {
                ordered?[at] = object
            }
            return old
        }

        /// Removes `key`'s object; returns it.
        mutating func remove(_ key: ObjectKey) -> R? {
            guard let old = cache.removeValue(forKey: key) else { return nil }
            let at = position(of: key)
            keys.remove(at: at)
            ordered?.remove(at: at)
            return old
        }

        /// Replaces everything with `objects`.
        mutating func replace(with objects: [ObjectKey: R]) {
            cache = objects
            keys = objects.keys.sorted()
            ordered = nil
        }

        /// Every object in the order of `keys`.
        mutating func list() -> [R] {
            if let ordered { return ordered }
            // Sized once: appending would leave up to twice the room (and, while growing, hold
            // the old buffer beside the new one).
            var built: [R] = []
            built.reserveCapacity(keys.count)
            for key in keys { if let object = cache[key] { built.append(object) } }
            ordered = built
            return built
        }

        /// Where `key` is in ``keys``, or would be.
        private func position(of key: ObjectKey) -> Int {
            var low = 0
            var high = keys.count
            while low < high {
                let middle = (low + high) / 2
                if keys[middle] < key { low = middle + 1 } else { high = middle }
            }
            return low
        }
    }

    /// Makes an informer; nothing happens until ``start()`` or ``run()``.
    public init(store: ResourceStore, tenant: String? = nil, logger: Logger = Logger(label: "gpuplane.informer")) {
        self.store = store
        self.tenant = tenant
        self.logger = logger
    }

    deinit { state.withLock { $0.task?.cancel() } }

    /// Runs ``run()`` in a task of its own until ``stop()``.
    public func start() {
        state.withLock { s in
            guard s.task == nil else { return }
            s.task = Task { [self] in await self.run() }
        }
    }

    /// Stops the informer started with ``start()`` and ends every subscriber's sequence.
    public func stop() {
        let task = state.withLock { $0.task }
        task?.cancel()
    }

    /// Waits until the first list is in the cache.
    /// - Throws: `CancellationError` when the waiting task is cancelled.
    public func waitUntilSynced() async throws {
        let id = UUID()
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                let ready = state.withLock { s -> Bool in
                    if s.synced { return true }
                    s.waiters[id] = c
                    return false
                }
                if ready { c.resume() }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.resume(throwing: CancellationError())
        }
    }

    /// Whether the first list is in the cache.
    public var hasSynced: Bool { state.withLock { $0.synced } }

    /// The revision the cache reflects: every change up to it has been applied and delivered.
    public var lastSeenRevision: Int64 { state.withLock { $0.revision } }

    /// Returns once ``lastSeenRevision`` reaches `revision`: every change up to it is in the
    /// cache and delivered. Also returns when the calling task is cancelled or the informer is
    /// not running (stopped, or ``run()`` not begun); the caller checks ``lastSeenRevision``
    /// when that matters.
    public func waitUntilSeen(_ revision: Int64) async {
        let id = UUID()
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let done = state.withLock { s -> Bool in
                    if s.revision >= revision || !s.running || Task.isCancelled { return true }
                    s.revisionWaiters[id] = (revision, c)
                    return false
                }
                if done { c.resume() }
            }
        } onCancel: {
            state.withLock { $0.revisionWaiters.removeValue(forKey: id) }?.continuation.resume()
        }
    }

    /// Checks with one read of keys only whether the cache holds what etcd holds now and, if
    /// so, moves ``lastSeenRevision`` to that read's revision. It holds it when etcd has no
    /// object of the kind written after ``lastSeenRevision`` and counts as many as the cache (so
    /// none was deleted either). For a kind nothing wrote to lately: its revision is that of
    /// its last change, and a watch cannot tell "nothing more" from "more on its way" without a
    /// progress notification, which etcd sends every 10 minutes by default.
    ///
    /// - Returns: true when confirmed; false when the cache is behind, not synced yet, or
    ///   changed during the read (ask again, or wait with ``waitUntilSeen(_:)``).
    /// - Throws: ``StoreError`` when etcd cannot be read.
    public func confirmCurrent() async throws -> Bool {
        let (seen, count, synced) = state.withLock { s in (s.revision, s.cache.count, s.synced) }
        guard synced else { return false }
        let answer: Etcd.RangeResponse
        do {
            answer = try await store.client.range(
                Etcd.RangeRequest(.prefix(R.storagePrefix(tenant: tenant)), limit: 1, keysOnly: true, minModRevision: seen + 1))
        } catch let e as EtcdError {
            throw StoreError.etcd(e)
        }
        guard answer.kvs.isEmpty, answer.count == Int64(count) else { return false }
        let woken = state.withLock { s -> Woken? in
            // A change applied meanwhile makes the answer about another cache.
            guard s.revision == seen, s.cache.count == count else { return nil }
            s.revision = max(s.revision, answer.header.revision)
            return Woken(revisionWaiters: takeRevisionWaiters(&s))
        }
        woken?.resume()
        return woken != nil
    }

    /// How many times the informer listed again after a compaction or a failed watch.
    public var relistCount: Int { state.withLock { $0.relists } }

    /// One cached object.
    public func get(tenant: String, name: String) -> R? {
        state.withLock { $0.cache[ObjectKey(tenant: tenant, name: name)] }
    }

    /// Every cached object, ordered by tenant then name. The order is kept as the cache changes
    /// and the answer until an object comes or goes (an update patches it), so this never
    /// sorts (sorting after every change was most of the scheduler leader's read at 1,000
    /// nodes, its passes reading every informer).
    public func list() -> [R] {
        state.withLock { $0.list() }
    }

    /// The changes from now on. A new subscriber first gets an `.added` for every object
    /// already cached, then every change in revision order. The sequence ends when the
    /// informer stops or the subscriber stops iterating.
    public func events() -> AsyncStream<InformerEvent<R>> {
        let (stream, continuation) = AsyncStream<InformerEvent<R>>.makeStream()
        let id = UUID()
        state.withLock { s in
            for object in s.list() { continuation.yield(.added(object)) }
            s.subscribers[id] = continuation
        }
        // Never `state` here: see `forgotten`.
        continuation.onTermination = { [weak self] _ in
            self?.forgotten.add(id)
        }
        return stream
    }

    /// A signal for every batch of changes, without the objects: for a subscriber that only
    /// needs to know it should look at the cache again (the scheduler's passes). Signals not
    /// yet read merge into one, so a slow reader holds no backlog and no copies of objects,
    /// where ``events()`` queues every change (and first every cached object) for each
    /// subscriber. The first signal comes at once. The sequence ends when the informer stops.
    public func changes() -> AsyncStream<Void> {
        let (stream, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let id = UUID()
        state.withLock { s in
            continuation.yield()
            s.signals[id] = continuation
        }
        continuation.onTermination = { [weak self] _ in
            self?.forgotten.add(id)
        }
        return stream
    }

    /// Lists and watches until the calling task is cancelled, relisting after compaction or
    /// failure with backoff. Ends every subscriber's sequence when it returns.
    public func run() async {
        state.withLock { $0.running = true }
        var failures = 0
        while !Task.isCancelled {
            do {
                let listed = try await store.list(R.self, tenant: tenant, strings: strings)
                apply(list: listed)
                failures = 0
                try await follow(from: listed.revision)
            } catch let e as EtcdError where e.code == .compacted {
                logger.info("informer watch compacted; relisting", metadata: ["kind": "\(R.kind)", "at": "\(e.compactRevision ?? 0)"])
                state.withLock { $0.relists += 1 }
                continue
            } catch {
                if Task.isCancelled { break }
                failures += 1
                state.withLock { $0.relists += 1 }
                logger.warning("informer failed; relisting", metadata: ["kind": "\(R.kind)", "error": "\(error)"])
                try? await Task.sleep(for: ResourceStore.relistPause(afterFailures: failures))
            }
        }
        let (subscribers, signals, waiters, revisionWaiters) = state.withLock { s in
            defer {
                s.subscribers.removeAll()
                s.signals.removeAll()
                s.waiters.removeAll()
                s.revisionWaiters.removeAll()
                s.running = false
                s.task = nil
            }
            return (
                Array(s.subscribers.values), Array(s.signals.values), Array(s.waiters.values),
                s.revisionWaiters.values.map(\.continuation)
            )
        }
        for c in subscribers { c.finish() }
        for c in signals { c.finish() }
        for w in waiters { w.resume(throwing: CancellationError()) }
        for w in revisionWaiters { w.resume() }
    }

    private func follow(from revision: Int64) async throws {
        let prefix = R.storagePrefix(tenant: tenant)
        let kindPrefix = R.storagePrefix(tenant: nil)
        let watch = store.client.watch(.prefix(prefix), startRevision: revision + 1, progressNotify: true)
        for try await batch in watch {
            var changes: [(ObjectKey, R?)] = []
            for event in batch.events {
                let key = event.kv.keyString
                guard key.hasPrefix(kindPrefix) else { continue }
                let rest = key.dropFirst(kindPrefix.count)
                guard let slash = rest.firstIndex(of: "/") else { continue }
                let objectKey = ObjectKey(
                    tenant: strings.share(String(rest[..<slash])), name: strings.share(String(rest[rest.index(after: slash)...])))
                switch event.type {
                case .put:
                    do {
                        changes.append((objectKey, try ResourceStore.decode(R.self, event.kv, strings: strings)))
                    } catch {
                        logger.error("informer skipped an undecodable object", metadata: ["key": "\(key)", "error": "\(error)"])
                    }
                case .delete:
                    changes.append((objectKey, nil))
                }
            }
            // A batch reflects the store up to its last event; a progress notification, up to its header.
            apply(changes: changes, revision: batch.events.last?.revision ?? batch.header.revision)
        }
        if Task.isCancelled { return }
        throw StoreError(code: .unavailable, message: "watch ended")
    }

    /// Replaces the cache with a fresh list, delivering the difference.
    private func apply(list: ResourceList<R>) {
        let woken = state.withLock { s -> Woken in
            forget(&s)
            var fresh: [ObjectKey: R] = [:]
            for item in list.items { fresh[ObjectKey(tenant: item.metadata.tenant, name: item.metadata.name)] = item }
            var events: [InformerEvent<R>] = []
            for key in s.keys where fresh[key] == nil {
                if let old = s.cache[key] { events.append(.deleted(old)) }
            }
            for item in list.items {
                let key = ObjectKey(tenant: item.metadata.tenant, name: item.metadata.name)
                if let old = s.cache[key] {
                    if old.metadata.resourceVersion != item.metadata.resourceVersion {
                        events.append(.updated(old: old, new: item))
                    }
                } else {
                    events.append(.added(item))
                }
            }
            s.replace(with: fresh)
            s.revision = max(s.revision, list.revision)
            deliver(events, to: s)
            var woken = Woken(revisionWaiters: takeRevisionWaiters(&s))
            if !s.synced {
                s.synced = true
                woken.syncWaiters = Array(s.waiters.values)
                s.waiters.removeAll()
            }
            return woken
        }
        woken.resume()
    }

    /// Applies watched changes in order, delivering them.
    private func apply(changes: [(ObjectKey, R?)], revision: Int64) {
        let woken = state.withLock { s -> Woken in
            forget(&s)
            var events: [InformerEvent<R>] = []
            for (key, object) in changes {
                if let object {
                    if let old = s.put(key, object) {
                        events.append(.updated(old: old, new: object))
                    } else {
                        events.append(.added(object))
                    }
                } else if let old = s.remove(key) {
                    events.append(.deleted(old))
                }
            }
            if revision > s.revision { s.revision = revision }
            deliver(events, to: s)
            return Woken(revisionWaiters: takeRevisionWaiters(&s))
        }
        woken.resume()
    }

    /// Waiters to resume once `state` is released: a waiter's cancellation handler takes
    /// `state` under the Swift runtime's lock of its task, and resuming it takes that lock.
    private struct Woken {
        var revisionWaiters: [CheckedContinuation<Void, Never>]
        var syncWaiters: [CheckedContinuation<Void, any Error>] = []

        func resume() {
            for waiter in revisionWaiters { waiter.resume() }
            for waiter in syncWaiters { waiter.resume() }
        }
    }

    /// Takes the ``waitUntilSeen(_:)`` callers whose revision the cache has reached.
    private func takeRevisionWaiters(_ s: inout State) -> [CheckedContinuation<Void, Never>] {
        guard !s.revisionWaiters.isEmpty else { return [] }
        let revision = s.revision
        var woken: [CheckedContinuation<Void, Never>] = []
        for (id, waiter) in s.revisionWaiters where waiter.revision <= revision {
            s.revisionWaiters[id] = nil
            woken.append(waiter.continuation)
        }
        return woken
    }

    /// Drops the subscribers whose consumers stopped (see `forgotten`).
    private func forget(_ s: inout State) {
        for id in forgotten.take() {
            s.subscribers[id] = nil
            s.signals[id] = nil
        }
    }

    private func deliver(_ events: [InformerEvent<R>], to s: State) {
        guard !events.isEmpty else { return }
        for (_, c) in s.subscribers {
            for e in events { c.yield(e) }
        }
        for (_, c) in s.signals { c.yield() }
    }
}

