import EtcdClient
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import GPUPlaneSystem
import Logging
import StreamingJSON

/// One change held by a ``WatchCache``: the store's event and the tenant of its key.
public struct CachedWatchEvent<R: Resource>: Sendable {
    /// The tenant segment of the object's key (`_cluster` for cluster-scoped kinds).
    public var tenant: String
    /// The change, decoded once for every subscriber.
    public var event: StoreWatchEvent<R>
}

/// What a subscriber of a ``WatchCache`` receives, in order.
public enum WatchCacheItem<R: Resource>: Sendable {
    /// Changes (whole revisions, in revision order; `revision` is the last one's), or, when
    /// `events` is empty, progress. Either way every change up to `revision` has now been
    /// delivered.
    case batch(events: [CachedWatchEvent<R>], revision: Int64)
    /// A tick the subscriber asked for itself (``WatchCacheSubscription/tick()``), queued
    /// behind the changes already buffered.
    case tick
}

/// Why a ``WatchCacheSubscription`` ended (its sequence finished).
public enum WatchCacheEnding: Sendable, Hashable {
    /// The subscriber fell behind: its buffer of ``WatchCacheLimits/subscriberBuffer`` items
    /// was full when a change arrived. Everything buffered before was delivered; resume from
    /// the last revision handled.
    case overflow(limit: Int)
    /// The cache lost its etcd watch to compaction: the changes after the subscriber's last
    /// revision cannot be delivered by the cache. Resume from the last revision handled
    /// (an etcd watch will then answer whether it is compacted).
    case gap
    /// The cache was stopped.
    case stopped
}

/// How much a ``WatchCache`` keeps.
public struct WatchCacheLimits: Sendable, Hashable {
    /// The most changes kept in the window (whole etcd batches are dropped, oldest first).
    public var maxEvents: Int
    /// The most bytes kept, counted as the JSON etcd stored (the object and its previous
    /// version) plus the key; decoded objects take a small multiple of it.
    public var maxBytes: Int
    /// The most items one subscriber may have waiting; one more ends it with
    /// ``WatchCacheEnding/overflow(limit:)`` (at least 4).
    public var subscriberBuffer: Int

    /// The api-server's defaults: 10,000 changes or 16 MiB per kind, 4,096 items per
    /// subscriber (each item is a reference to a batch the window shares).
    public init(maxEvents: Int = 10_000, maxBytes: Int = 16 << 20, subscriberBuffer: Int = 4_096) {
        self.maxEvents = max(1, maxEvents)
        self.maxBytes = max(1, maxBytes)
        self.subscriberBuffer = max(4, subscriberBuffer)
    }
}

/// A kind whose watchers mostly want the objects of one node (node-agents watching their
/// replicas and model servers): a ``WatchCache`` of it hands a change only to the
/// subscribers routed to the nodes the change concerns (before and after it), and to the
/// unrouted ones, rather than waking every node's watch for every change.
public protocol NodeRoutedResource: Resource {
    /// The node the object is on; nil when none.
    var routedNode: String? { get }
}

extension Replica: NodeRoutedResource {
    /// The node of the binding.
    public var routedNode: String? { binding?.node }
}

extension ModelServer: NodeRoutedResource {
    /// The node of the binding.
    public var routedNode: String? { binding?.node }
}

extension StoreWatchEvent {
    /// The node the object was on before the change and the one after it (nil: none, or a
    /// kind that is not a ``NodeRoutedResource``).
    var routedNodes: (before: String?, after: String?) {
        ((previousBox?.value as? any NodeRoutedResource)?.routedNode, (objectBox?.value as? any NodeRoutedResource)?.routedNode)
    }

    /// Whether the object was on `node` before or after the change.
    func concerns(node: String) -> Bool {
        let nodes = routedNodes
        return nodes.before == node || nodes.after == node
    }
}

/// Where a ``WatchCacheSubscription``'s items go instead of its own ``WatchCacheSubscription/items``:
/// several subscriptions (of several kinds) can feed one consumer, so that one task serves
/// them (a node's watch of its replicas and model servers).
public struct WatchCacheSink<R: Resource>: Sendable {
    /// Hands an item on; false when the consumer's buffer is full (the item is dropped, and the
    /// cache ends the subscription with ``WatchCacheEnding/overflow(limit:)``).
    public let deliver: @Sendable (WatchCacheItem<R>) -> Bool
    /// Called once the subscription ends or is cancelled: nothing more comes.
    public let finish: @Sendable () -> Void

    /// Makes a sink.
    public init(deliver: @escaping @Sendable (WatchCacheItem<R>) -> Bool, finish: @escaping @Sendable () -> Void) {
        self.deliver = deliver
        self.finish = finish
    }
}

/// One subscriber of a ``WatchCache``: its ``items`` from the revision it subscribed after.
public final class WatchCacheSubscription<R: Resource>: Sendable {
    /// The replayed changes, then each new batch and progress, and this subscriber's ticks.
    /// Finishes when the subscriber is ended (see ``ending``) or cancelled. Empty for a
    /// subscription made with a ``WatchCacheSink``: its items go to the sink.
    public let items: AsyncStream<WatchCacheItem<R>>
    private let continuation: AsyncStream<WatchCacheItem<R>>.Continuation
    private let sink: WatchCacheSink<R>?
    let id = UUID()
    /// The node whose changes it wants; nil: every change.
    let route: String?
    private let reason = Locked<WatchCacheEnding?>(nil)
    /// Queues the cache's head as progress (routed subscriptions: their batches skip changes
    /// of other nodes, so only the cache knows how far they are served).
    let progress = LockedAction()
    /// Removes it from the cache (set by the cache once it is attached).
    private let detach = LockedAction()

    init(buffer: Int, route: String?, sink: WatchCacheSink<R>? = nil) {
        (items, continuation) = AsyncStream<WatchCacheItem<R>>.makeStream(bufferingPolicy: .bufferingOldest(sink == nil ? buffer : 0))
        if sink != nil { continuation.finish() }
        self.sink = sink
        self.route = route
    }

    /// Why ``items`` finished; nil while it runs or when the subscriber cancelled.
    public var ending: WatchCacheEnding? { reason.withLock { $0 } }

    /// Queues a ``WatchCacheItem/tick`` behind what is buffered (dropped when the buffer is
    /// full); a routed subscription first queues the cache's head as progress, so the tick's
    /// bookmark says how far it is served.
    public func tick() {
        progress()
        _ = deliver(.tick)
    }

    /// Stops the subscription; the cache forgets it.
    public func cancel() {
        finish()
        detach()
    }

    /// Queues `item`; false when the buffer is full (the item is dropped).
    func deliver(_ item: WatchCacheItem<R>) -> Bool {
        if let sink { return sink.deliver(item) }
        if case .dropped = continuation.yield(item) { return false }
        return true
    }

    /// Sets how the cache forgets it: on ``cancel()``, and when the consumer of ``items`` stops
    /// (a stream subscription; a sink's consumer cancels).
    func attach(_ detach: @escaping @Sendable () -> Void) {
        self.detach.set(detach)
        if sink == nil { continuation.onTermination = { _ in detach() } }
    }

    func end(_ why: WatchCacheEnding) {
        reason.withLock { if $0 == nil { $0 = why } }
        finish()
    }

    private func finish() {
        if let sink { sink.finish() } else { continuation.finish() }
    }
}

/// One etcd watch of a kind (all tenants) per process, shared by every client watch of that
/// kind: a window of recent changes, decoded once, replayed to a subscriber from its revision
/// and then fanned out as they arrive. Filtering (tenant, node) is the subscriber's.
///
/// Revisions: the window holds every change with a revision above ``floor`` up to ``head``;
/// ``subscribe(after:)`` serves any revision at or above ``floor`` (a later one waits for the
/// cache to reach it) and answers nil below it, where the caller watches etcd itself. The
/// window keeps at most ``WatchCacheLimits/maxEvents`` changes and
/// ``WatchCacheLimits/maxBytes`` bytes, dropping whole batches oldest first (which raises
/// ``floor``). Progress notifications from etcd advance ``head`` and reach subscribers.
///
/// When the etcd watch fails it is opened again from ``head`` + 1 and subscribers continue
/// without a gap; when that revision was compacted, every subscriber is ended with
/// ``WatchCacheEnding/gap`` and the cache starts over from etcd's present revision.
public final class WatchCache<R: Resource>: Sendable {
    /// The store it watches.
    public let store: ResourceStore
    /// What it keeps.
    public let limits: WatchCacheLimits
    private let logger: Logger
    private let prefix = R.storagePrefix(tenant: nil)
    private let state = Locked(State())
    /// Subscriptions whose consumer stopped, forgotten the next time `state` is taken: the cache
    /// yields under `state`, so termination handlers must not take it (``TerminationQueue``).
    private let forgotten = TerminationQueue<UUID>()
    /// Where the window's objects share their equal strings.
    private let strings = StringTable()
    /// Each key's last decoded object, so that the next change's previous object is the same
    /// box, not a second copy decoded from etcd's prevKV.
    private let latest = LatestObjects<R>()

    private struct Entry {
        var events: [CachedWatchEvent<R>]
        var last: Int64
        var bytes: Int
        /// The nodes the batch's changes concern (their objects' before and after); nil when
        /// it may concern any (a kind not routed, or a change whose node before it is unknown).
        var nodes: [String]?
        /// Each change's etcd key, for ``LatestObjects/forget(key:modRevision:)`` when dropped.
        var keys: [String]
    }

    private struct State {
        /// Reads the first revision; nil once started (or before the first call).
        var starting: Task<Void, any Error>?
        var started = false
        var task: Task<Void, Never>?
        var floor: Int64 = 0
        var head: Int64 = 0
        var window: [Entry] = []
        var first = 0
        var events = 0
        var bytes = 0
        var subscribers: [UUID: WatchCacheSubscription<R>] = [:]
        /// The routed subscribers, by node.
        var routed: [String: [UUID: WatchCacheSubscription<R>]] = [:]
        /// The subscribers that want every change.
        var unrouted: [UUID: WatchCacheSubscription<R>] = [:]
        /// Batches of changes handed to subscribers so far (tests, metrics).
        var batchDeliveries = 0
        var restarts = 0
        var stopped = false
        /// ``quietThrough(after:)``'s answers (and the reads under way), by revision.
        var quiet: [Int64: Task<Int64?, any Error>] = [:]
        /// ``isCompacted(after:)``'s reads under way, by the revision each reads at.
        var compactionChecks: [Int64: Task<Bool, Never>] = [:]
        /// ``isCompacted(after:)``'s calls, and the reads it sent, so far (tests).
        var compactionQuestions = 0
        var compactionReads = 0

        mutating func add(_ subscription: WatchCacheSubscription<R>) {
            subscribers[subscription.id] = subscription
            if let route = subscription.route {
                routed[route, default: [:]][subscription.id] = subscription
            } else {
                unrouted[subscription.id] = subscription
            }
        }

        mutating func remove(_ id: UUID) {
            guard let subscription = subscribers.removeValue(forKey: id) else { return }
            if let route = subscription.route {
                routed[route]?[id] = nil
                if routed[route]?.isEmpty == true { routed[route] = nil }
            } else {
                unrouted[id] = nil
            }
        }

        mutating func removeAll() {
            subscribers.removeAll()
            routed.removeAll()
            unrouted.removeAll()
        }
    }

    /// Makes a cache; nothing is watched until ``start()``.
    public init(store: ResourceStore, limits: WatchCacheLimits = WatchCacheLimits(), logger: Logger = Logger(label: "gpuplane.watch-cache")) {
        self.store = store
        self.limits = limits
        self.logger = logger
    }

    deinit { state.withLock { $0.task?.cancel() } }

    /// Every change above this revision and up to ``head`` is in the window (-1 before ``start()``).
    public var floor: Int64 { state.withLock { $0.started ? $0.floor : -1 } }
    /// The revision the cache has seen every change of this kind up to.
    public var head: Int64 { state.withLock { $0.head } }
    /// How many subscribers are attached.
    public var subscriberCount: Int {
        state.withLock { s in
            forget(&s)
            return s.subscribers.count
        }
    }
    /// How many batches of changes were handed to subscribers so far (progress not counted).
    public var batchDeliveries: Int { state.withLock { $0.batchDeliveries } }

    /// How many keys' last objects it keeps for sharing with their next change (for tests).
    package var keptObjects: Int { latest.count }
    /// How many times the etcd watch was opened again after a failure or compaction.
    public var restartCount: Int { state.withLock { $0.restarts } }
    /// How many changes the window holds.
    public var windowCount: Int { state.withLock { $0.events } }

    /// Starts the shared etcd watch if it is not running: reads etcd's present revision (the
    /// first ``floor``) and watches from the next one. Returns at once when started.
    /// - Throws: ``StoreError`` when etcd cannot be read (a later call tries again).
    public func start() async throws {
        let task: Task<Void, any Error>? = state.withLock { s in
            if s.started || s.stopped { return nil }
            if let starting = s.starting { return starting }
            let starting = Task { try await self.begin() }
            s.starting = starting
            return starting
        }
        guard let task else { return }
        do {
            try await task.value
        } catch {
            state.withLock { if $0.starting == task { $0.starting = nil } }
            throw error
        }
    }

    private func begin() async throws {
        let revision = try await presentRevision()
        state.withLock { s in
            guard !s.started, !s.stopped else { return }
            s.floor = revision
            s.head = revision
            s.started = true
            s.starting = nil
            s.task = Task { await self.run() }
        }
        logger.debug("watch cache started", metadata: ["kind": "\(R.kind)", "revision": "\(revision)"])
    }

    /// Stops the etcd watch and ends every subscriber with ``WatchCacheEnding/stopped``.
    public func stop() {
        let (task, subscribers) = state.withLock { s in
            s.stopped = true
            defer { s.removeAll() }
            return (s.task, Array(s.subscribers.values))
        }
        task?.cancel()
        for subscriber in subscribers { subscriber.end(.stopped) }
    }

    /// A subscription to every change after `revision`: the window's changes above it at
    /// once (as one batch, then progress up to ``head``), then each new batch. Nil when the
    /// cache is not started or `revision` is below ``floor``: watch etcd itself.
    ///
    /// The window is the cache's, not etcd's: a revision etcd compacted may still be served
    /// here. A caller that must answer 410 for those asks ``isCompacted(after:)`` first.
    ///
    /// With `route` (a node, for a kind that is a ``NodeRoutedResource``), new batches come
    /// only when one of their changes concerns that node (its object on the node before or
    /// after the change), and each ``WatchCacheSubscription/tick()`` queues the head as
    /// progress: the subscriber must still filter what it gets. Its replay holds the window's
    /// changes that concern that node, and every change of a batch whose nodes are unknown.
    public func subscribe(after revision: Int64, route: String? = nil, into sink: WatchCacheSink<R>? = nil) -> WatchCacheSubscription<R>? {
        let subscription = WatchCacheSubscription<R>(
            buffer: limits.subscriberBuffer, route: R.self is any NodeRoutedResource.Type ? route : nil, sink: sink)
        let ok = state.withLock { s -> Bool in
            forget(&s)
            guard s.started, !s.stopped, revision >= s.floor else { return false }
            // Entries are in revision order: find the first with a change above `revision`.
            var low = s.first
            var high = s.window.count
            while low < high {
                let mid = (low + high) / 2
                if s.window[mid].last > revision { high = mid } else { low = mid + 1 }
            }
            // A routed subscription's replay holds only the changes of its node: every node
            // that moved to this api-server at once (its peer's restart) resumed here, and a
            // copy of the whole window each (up to 10,000 changes of ~1.5 KB) took 2 GB.
            let route = subscription.route
            var replay: [CachedWatchEvent<R>] = []
            for entry in s.window[low...] {
                if let route, let nodes = entry.nodes, !nodes.contains(route) { continue }
                for event in entry.events where event.event.revision > revision {
                    if let route, entry.nodes != nil, !event.event.concerns(node: route) { continue }
                    replay.append(event)
                }
            }
            if let last = replay.last { _ = subscription.deliver(.batch(events: replay, revision: last.event.revision)) }
            if s.head > revision { _ = subscription.deliver(.batch(events: [], revision: s.head)) }
            s.add(subscription)
            return true
        }
        guard ok else { return nil }
        let id = subscription.id
        // Never `state` here: see `forgotten`.
        subscription.attach { [weak self] in self?.forgotten.add(id) }
        if subscription.route != nil {
            subscription.progress.set { [weak self] in self?.queueProgress(to: id) }
        }
        return subscription
    }

    /// Whether etcd compacted the changes after `revision` (a watch from `revision` + 1
    /// would answer "compacted"): a range read at that revision. False when etcd cannot
    /// tell (the revision is in its future, or it is unreachable).
    ///
    /// Compaction only moves up, so a read that finds revision R readable answers for every
    /// revision above R too: a caller joins a read under way at or below its revision instead
    /// of sending its own (the 2,500 nodes that come back to a restarted api-server each
    /// resume a watch, and each read on its own was a storm of ranges and connections into
    /// etcd). A read is shared only while under way, so no answer is older than the read a
    /// caller would have sent itself, give or take that read's time in flight.
    public func isCompacted(after revision: Int64) async -> Bool {
        let (shared, own) = state.withLock { s -> (Task<Bool, Never>?, Task<Bool, Never>?) in
            s.compactionQuestions += 1
            if let under = s.compactionChecks.first(where: { $0.key <= revision + 1 }) { return (under.value, nil) }
            let task = Task { await self.readCompacted(at: revision + 1) }
            s.compactionChecks[revision + 1] = task
            return (nil, task)
        }
        if let shared, !(await shared.value) { return false }
        if shared != nil {
            // The shared read found a lower revision compacted: this one may not be.
            return await readCompacted(at: revision + 1)
        }
        guard let own else { return false }
        let compacted = await own.value
        state.withLock { s in
            if s.compactionChecks[revision + 1] == own { s.compactionChecks[revision + 1] = nil }
        }
        return compacted
    }

    /// Reads the kind's prefix at `revision`, counting only: whether etcd compacted it.
    private func readCompacted(at revision: Int64) async -> Bool {
        state.withLock { $0.compactionReads += 1 }
        do {
            _ = try await store.client.range(.key(Data(prefix.utf8)), revision: revision, countOnly: true)
            return false
        } catch let error as EtcdError {
            return error.code == .compacted
        } catch {
            return false
        }
    }

    /// The range reads ``isCompacted(after:)`` sent so far, and its calls (tests).
    var compactionReadCount: Int { state.withLock { $0.compactionReads } }
    var compactionQuestionCount: Int { state.withLock { $0.compactionQuestions } }

    /// A revision at or above ``floor`` up to which no object of this kind changed after
    /// `revision`; nil when one did, or when etcd cannot tell. A watch from below the floor
    /// (a node resuming on an api-server that started after its last change) may then
    /// subscribe after the answer instead of keeping an etcd watch of its own until a change
    /// of the kind comes: in a quiet cluster, none may come for hours.
    ///
    /// Two reads prove it for the floor F: at F the kind's key with the newest change was
    /// last changed at or below `revision` (so every key there is as it was at `revision`), and
    /// the kind had as many keys at `revision` as at F (so none was deleted meanwhile: a
    /// deleted key is in no range). Answers are kept by revision, and the nodes resuming from
    /// the same one share a read under way.
    public func quietThrough(after revision: Int64) async -> Int64? {
        let task: Task<Int64?, any Error>? = state.withLock { s in
            guard s.started, !s.stopped, revision > 0, revision < s.floor else { return nil }
            if let known = s.quiet[revision] { return known }
            if s.quiet.count >= 64 { s.quiet.removeAll() }
            let floor = s.floor
            let task = Task { try await self.unchanged(after: revision, through: floor) ? floor : nil }
            s.quiet[revision] = task
            return task
        }
        guard let task else { return nil }
        do {
            return try await task.value
        } catch {
            // Not known: the next caller asks etcd again.
            state.withLock { if $0.quiet[revision] == task { $0.quiet[revision] = nil } }
            return nil
        }
    }

    private func unchanged(after revision: Int64, through floor: Int64) async throws -> Bool {
        let range = Etcd.KeyRange.prefix(prefix)
        let newest = try await store.client.range(range, revision: floor, limit: 1, keysOnly: true, sortOrder: .descend, sortTarget: .mod)
        if let kv = newest.kvs.first, kv.modRevision > revision { return false }
        let before = try await store.client.range(range, revision: revision, countOnly: true)
        return before.count == newest.count
    }

    private func presentRevision() async throws -> Int64 {
        do {
            return try await store.client.range(.key(Data(prefix.utf8)), countOnly: true).header.revision
        } catch let error as EtcdError {
            throw StoreError.etcd(error)
        }
    }

    /// Follows etcd from ``head`` + 1 until cancelled, opening the watch again after a failure.
    private func run() async {
        var failures = 0
        while !Task.isCancelled {
            let from = state.withLock { $0.head + 1 }
            do {
                for try await response in store.client.watch(.prefix(prefix), startRevision: from, prevKV: true, progressNotify: true) {
                    failures = 0
                    receive(response)
                }
                if Task.isCancelled { break }
                throw StoreError(code: .unavailable, message: "the etcd watch ended")
            } catch let error as EtcdError where error.code == .compacted {
                if Task.isCancelled { break }
                logger.warning(
                    "watch cache lost its etcd watch to compaction; subscribers resume",
                    metadata: ["kind": "\(R.kind)", "from": "\(from)", "compacted": "\(error.compactRevision ?? 0)"])
                await startOver()
            } catch {
                if Task.isCancelled { break }
                failures += 1
                state.withLock { $0.restarts += 1 }
                logger.warning("watch cache's etcd watch failed; watching again", metadata: ["kind": "\(R.kind)", "from": "\(from)", "error": "\(error)"])
                try? await Task.sleep(for: ResourceStore.relistPause(afterFailures: failures))
            }
        }
    }

    /// After compaction: ends every subscriber with ``WatchCacheEnding/gap`` and empties the
    /// window at etcd's present revision.
    private func startOver() async {
        var failures = 0
        while !Task.isCancelled {
            do {
                let revision = try await presentRevision()
                let ended = state.withLock { s in
                    defer {
                        s.removeAll()
                        s.window.removeAll()
                        (s.first, s.events, s.bytes) = (0, 0, 0)
                        (s.floor, s.head) = (revision, revision)
                        s.restarts += 1
                    }
                    return Array(s.subscribers.values)
                }
                latest.removeAll()
                for subscriber in ended { subscriber.end(.gap) }
                return
            } catch {
                failures += 1
                try? await Task.sleep(for: ResourceStore.relistPause(afterFailures: failures))
            }
        }
    }

    /// Drops the subscriptions whose consumers stopped (see `forgotten`).
    private func forget(_ s: inout State) {
        for id in forgotten.take() { s.remove(id) }
    }

    /// Queues the head as progress for subscriber `id`, under the lock that orders every batch
    /// queued for it: whatever of its node's changes the head covers is queued before.
    private func queueProgress(to id: UUID) {
        state.withLock { s in
            guard let subscriber = s.subscribers[id] else { return }
            _ = subscriber.deliver(.batch(events: [], revision: s.head))
        }
    }

    private func receive(_ response: Etcd.WatchResponse) {
        var events: [CachedWatchEvent<R>] = []
        events.reserveCapacity(response.events.count)
        var keys: [String] = []
        keys.reserveCapacity(response.events.count)
        var bytes = 0
        // The nodes the batch concerns; nil: every subscriber (a kind not routed, or a change
        // whose node before it is unknown).
        var nodes: Set<String>? = R.self is any NodeRoutedResource.Type ? [] : nil
        for event in response.events {
            let key = event.kv.keyString
            guard key.hasPrefix(prefix) else { continue }
            let rest = key.dropFirst(prefix.count)
            let tenant = rest.firstIndex(of: "/").map { String(rest[..<$0]) } ?? ""
            let previousBox = event.prevKV.flatMap { kv in
                latest.shared(key: key, modRevision: kv.modRevision)
                    ?? (try? ResourceStore.decode(R.self, kv, strings: strings)).map(StoredObject.init)
            }
            let change: StoreWatchEvent<R>
            switch event.type {
            case .put:
                let objectBox = (try? ResourceStore.decode(R.self, event.kv, strings: strings)).map(StoredObject.init)
                latest.keep(objectBox, key: key, modRevision: event.kv.modRevision)
                change = StoreWatchEvent(change: .put, revision: event.revision, objectBox: objectBox, previousBox: previousBox)
            case .delete:
                latest.keep(nil, key: key, modRevision: event.revision)
                change = StoreWatchEvent(change: .delete, revision: event.revision, objectBox: nil, previousBox: previousBox)
            }
            events.append(CachedWatchEvent(tenant: tenant, event: change))
            keys.append(key)
            if nodes != nil {
                let created = event.type == .put && event.kv.version == 1
                if previousBox == nil && !created {
                    nodes = nil
                } else {
                    let routed = change.routedNodes
                    if let node = routed.before { nodes?.insert(node) }
                    if let node = routed.after { nodes?.insert(node) }
                }
            }
            bytes += event.kv.key.count + event.kv.value.count + (event.prevKV?.value.count ?? 0)
        }
        let ended: [WatchCacheSubscription<R>] = state.withLock { s in
            forget(&s)
            let item: WatchCacheItem<R>
            if let last = events.last?.event.revision {
                guard last > s.head else { return [] }
                s.head = last
                s.window.append(Entry(events: events, last: last, bytes: bytes, nodes: nodes.map(Array.init), keys: keys))
                s.events += events.count
                s.bytes += bytes
                // Drop whole batches, oldest first, keeping at least the newest.
                while s.window.count - s.first > 1, s.events > limits.maxEvents || s.bytes > limits.maxBytes {
                    let dropped = s.window[s.first]
                    for (key, event) in zip(dropped.keys, dropped.events) where event.event.change == .put {
                        latest.forget(key: key, modRevision: event.event.revision)
                    }
                    s.first += 1
                    s.events -= dropped.events.count
                    s.bytes -= dropped.bytes
                    s.floor = dropped.last
                }
                if s.first > 64 && s.first * 2 > s.window.count {
                    s.window.removeFirst(s.first)
                    s.first = 0
                }
                item = .batch(events: events, revision: last)
            } else if response.events.isEmpty {
                guard response.header.revision > s.head else { return [] }
                s.head = response.header.revision
                item = .batch(events: [], revision: s.head)
            } else {
                return []
            }
            // Who gets the item: everyone, or the unrouted and the routed to the batch's nodes
            // (the others learn the head from their ticks).
            var recipients: [WatchCacheSubscription<R>] = []
            if let nodes, !events.isEmpty {
                recipients.reserveCapacity(s.unrouted.count)
                recipients.append(contentsOf: s.unrouted.values)
                for node in nodes {
                    if let group = s.routed[node] { recipients.append(contentsOf: group.values) }
                }
            } else {
                recipients = Array(s.subscribers.values)
            }
            if !events.isEmpty { s.batchDeliveries += recipients.count }
            var overflowed: [WatchCacheSubscription<R>] = []
            for subscriber in recipients {
                if !subscriber.deliver(item) {
                    overflowed.append(subscriber)
                    s.remove(subscriber.id)
                }
            }
            return overflowed
        }
        for subscriber in ended { subscriber.end(.overflow(limit: limits.subscriberBuffer)) }
    }

    /// Stops following etcd (subscribers stay attached and see nothing), runs `meanwhile`,
    /// and follows etcd again from ``head`` + 1, as after a failed watch. For tests of the
    /// restart: `meanwhile` may write and compact.
    package func interruptWatch(_ meanwhile: () async throws -> Void) async rethrows {
        let task = state.withLock { s in
            defer { s.task = nil }
            return s.task
        }
        task?.cancel()
        await task?.value
        defer {
            state.withLock { s in
                if !s.stopped {
                    s.restarts += 1
                    s.task = Task { await self.run() }
                }
            }
        }
        try await meanwhile()
    }
}

/// One ``WatchCache`` per kind, made on first use (and started by the first watch).
public final class WatchCaches: Sendable {
    /// The store watched.
    public let store: ResourceStore
    /// What each cache keeps.
    public let limits: WatchCacheLimits
    private let logger: Logger
    private let caches = Locked<[ResourceKind: any Sendable]>([:])

    /// Makes the set; nothing is watched until a cache is started.
    public init(store: ResourceStore, limits: WatchCacheLimits = WatchCacheLimits(), logger: Logger = Logger(label: "gpuplane.watch-cache")) {
        self.store = store
        self.limits = limits
        self.logger = logger
    }

    /// The cache of `R`.
    public func cache<R: Resource>(_ type: R.Type) -> WatchCache<R> {
        caches.withLock { caches in
            if let existing = caches[R.kind] as? WatchCache<R> { return existing }
            let made = WatchCache<R>(store: store, limits: limits, logger: logger)
            caches[R.kind] = made
            return made
        }
    }

    /// Starts the cache of `R` now rather than at its first watch, retrying until etcd
    /// answers: a client that lists first and then watches from the list's revision (the
    /// node-agent does) is then inside the window, not below it.
    public func startEagerly<R: Resource>(_ type: R.Type) {
        let cache = cache(R.self)
        let logger = logger
        Task {
            var failures = 0
            while !Task.isCancelled {
                do {
                    try await cache.start()
                    return
                } catch {
                    failures += 1
                    if failures == 1 { logger.warning("watch cache cannot start yet; retrying", metadata: ["kind": "\(R.kind)", "error": "\(error)"]) }
                    try? await Task.sleep(for: ResourceStore.relistPause(afterFailures: failures))
                }
            }
        }
    }

    /// Stops every cache.
    public func stop() {
        let all = caches.withLock { Array($0.values) }
        for cache in all { (cache as? any StoppableCache)?.stop() }
    }
}

private protocol StoppableCache { func stop() }
extension WatchCache: StoppableCache {}

/// The last object a ``WatchCache`` decoded for each key in its window, by its modRevision:
/// the previous object of the key's next change is then shared with the change before, not
/// decoded again from etcd's prevKV (in a window of updates that halves the objects kept). A
/// key is forgotten when the window drops its last change; one it does not know is decoded.
final class LatestObjects<R: Resource>: Sendable {
    private let objects = Locked<[String: (modRevision: Int64, box: StoredObject<R>)]>([:])

    /// The box decoded for `key` at `modRevision`; nil when it is not the last one kept.
    func shared(key: String, modRevision: Int64) -> StoredObject<R>? {
        objects.withLock { objects in
            guard let kept = objects[key], kept.modRevision == modRevision else { return nil }
            return kept.box
        }
    }

    /// Keeps `box` as `key`'s object at `modRevision` (nil: the key was deleted or did not decode).
    func keep(_ box: StoredObject<R>?, key: String, modRevision: Int64) {
        objects.withLock { $0[key] = box.map { (modRevision, $0) } }
    }

    /// Forgets `key` if its object kept is the one of `modRevision` (its change left the window).
    func forget(key: String, modRevision: Int64) {
        objects.withLock { objects in
            if objects[key]?.modRevision == modRevision { objects[key] = nil }
        }
    }

    /// Forgets every key (the window was emptied).
    func removeAll() { objects.withLock { $0.removeAll() } }

    /// How many keys it holds.
    var count: Int { objects.withLock { $0.count } }
}
