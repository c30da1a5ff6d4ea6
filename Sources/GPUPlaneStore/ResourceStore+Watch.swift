import EtcdClient
import GPUPlaneCore

/// One change of an object, seen by ``ResourceStore/watch(_:tenant:from:progressNotify:)``.
public struct StoreWatchEvent<R: Resource>: Sendable {
    /// What happened to the key.
    public enum Change: Sendable, Hashable {
        /// Created or replaced.
        case put
        /// Deleted (or its lease expired).
        case delete
    }

    /// What happened.
    public var change: Change
    /// The store's revision of the change.
    public var revision: Int64
    /// For a put, the object as written (its resourceVersion is ``revision``); nil for a
    /// delete, or when the stored value does not decode as `R`.
    public var object: R? {
        get { objectBox?.value }
        set { objectBox = newValue.map(StoredObject.init) }
    }
    /// The object before the change (its resourceVersion the revision it was written at),
    /// when etcd still had it and it decodes as `R`.
    public var previous: R? {
        get { previousBox?.value }
        set { previousBox = newValue.map(StoredObject.init) }
    }
    /// The objects, boxed: an event held for long (a ``WatchCache`` window keeps thousands)
    /// takes a pointer for a missing one, not a whole object's inline size (some 740 bytes
    /// for a Replica), and shares its previous object with the change before it.
    package var objectBox: StoredObject<R>?
    package var previousBox: StoredObject<R>?

    /// An event of `change` at `revision`.
    public init(change: Change, revision: Int64, object: R?, previous: R?) {
        self.init(change: change, revision: revision, objectBox: object.map(StoredObject.init), previousBox: previous.map(StoredObject.init))
    }

    /// An event whose objects are already boxed (shared with other events).
    package init(change: Change, revision: Int64, objectBox: StoredObject<R>?, previousBox: StoredObject<R>?) {
        self.change = change
        self.revision = revision
        self.objectBox = objectBox
        self.previousBox = previousBox
    }
}

/// One decoded object, shared by the events that hold it.
package final class StoredObject<R: Resource>: Sendable {
    package let value: R
    package init(_ value: R) { self.value = value }
}

/// What one message of a watch brought: changes, or only progress.
public struct StoreWatchBatch<R: Resource>: Sendable {
    /// The changes, in revision order (one transaction's at one revision); empty for a
    /// progress notification.
    public var events: [StoreWatchEvent<R>]
    /// The store's revision when the message was sent. For a progress notification, every
    /// change up to it was sent; a batch of replayed changes may carry a later revision than
    /// its last change, with more replay to follow.
    public var revision: Int64

    /// Whether this is a progress notification (no change).
    public var isProgress: Bool { events.isEmpty }
}

extension ResourceStore {
    /// The pause before listing and watching again after `failures` failed attempts in a row:
    /// 100 ms, doubling to 2 s (informers, watch caches, the heartbeat and token copies).
    public static func relistPause(afterFailures failures: Int) -> Duration {
        .milliseconds(min(2000, 50 << min(failures, 6)))
    }

    /// The changes of the objects of one kind (one tenant's, or all for nil) from `revision`
    /// on, in revision order, never lost, repeated or reordered (the etcd client resumes a
    /// dropped stream where it was). With `progressNotify`, a quiet watch gets an empty batch
    /// now and then, carrying the store's revision.
    ///
    /// The sequence ends by throwing ``StoreError`` ``StoreError/Code/compacted`` when
    /// `revision` (or the revision it must resume from) was compacted away: list again and
    /// watch from the list's revision + 1; ``StoreError/Code/unavailable`` for any other
    /// failure. It ends without error when the consuming task is cancelled or stops iterating.
    public func watch<R: Resource>(
        _ type: R.Type, tenant: String?, from revision: Int64, progressNotify: Bool = true
    ) -> AsyncThrowingStream<StoreWatchBatch<R>, any Error> {
        watchKeys(.prefix(R.storagePrefix(tenant: tenant)), from: revision, prevKV: true, progressNotify: progressNotify) { batch in
            StoreWatchBatch(
                events: batch.events.map { event in
                    let previous = event.prevKV.flatMap { try? ResourceStore.decode(R.self, $0) }
                    switch event.type {
                    case .put:
                        return StoreWatchEvent(
                            change: .put, revision: event.revision, object: try? ResourceStore.decode(R.self, event.kv),
                            previous: previous)
                    case .delete:
                        return StoreWatchEvent(change: .delete, revision: event.revision, object: nil, previous: previous)
                    }
                },
                revision: batch.header.revision)
        }
    }

    /// Watches `range` from `revision` (0: from now), each message turned into a `T`; etcd's
    /// errors become ``StoreError`` (``StoreError/Code/compacted`` for a compacted revision).
    /// The typed watches (objects, heartbeats) are built on it.
    func watchKeys<T: Sendable>(
        _ range: Etcd.KeyRange, from revision: Int64, prevKV: Bool = false, progressNotify: Bool = false,
        _ transform: @escaping @Sendable (Etcd.WatchResponse) -> T
    ) -> AsyncThrowingStream<T, any Error> {
        let (stream, continuation) = AsyncThrowingStream<T, any Error>.makeStream()
        let watch = client.watch(range, startRevision: revision, prevKV: prevKV, progressNotify: progressNotify)
        let pump = Task {
            do {
                for try await batch in watch { continuation.yield(transform(batch)) }
                continuation.finish()
            } catch let error as EtcdError {
                continuation.finish(throwing: StoreError.etcd(error))
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in pump.cancel() }
        return stream
    }
}
