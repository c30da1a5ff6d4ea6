/// The subscribers whose streams ended, queued by their termination handlers for their owner
/// to forget the next time it takes its own lock.
///
/// A stream's `onTermination` (like any cancellation handler) runs under the Swift runtime's
/// lock of the task being cancelled, and an owner that yields to its subscribers' tasks while
/// it holds its lock (to keep each subscriber's items in order) takes that runtime lock too,
/// through the yield. A handler that took the owner's lock could deadlock with such a yield,
/// and did: a watch cache froze an api-server at SIGTERM. So the handler only calls ``add(_:)``
/// (a leaf lock: nothing is called under it), and the owner calls ``take()`` under its lock.
public final class TerminationQueue<ID: Sendable>: Sendable {
    private let ended = Locked<[ID]>([])

    /// An empty queue.
    public init() {}

    /// Queues `id`: its subscriber's stream ended. Safe in a termination handler.
    public func add(_ id: ID) { ended.withLock { $0.append(id) } }

    /// The ids queued since the last call, in order; the queue is then empty.
    public func take() -> [ID] {
        ended.withLock { ids in
            defer { ids.removeAll() }
            return ids
        }
    }
}
