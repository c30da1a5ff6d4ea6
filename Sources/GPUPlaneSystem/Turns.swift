/// Tasks that share a key take turns: one at a time per key, first come first served, and
/// tasks of different keys never wait for each other. A waiting task that is cancelled leaves
/// the queue and throws `CancellationError`; a task holding the turn hands it on when its body
/// returns or throws.
///
/// The api-server runs each tenant's GPU admissions through one of these: admissions of one
/// tenant are decided on a read and committed under a compare-and-swap of the tenant's marker,
/// so ten concurrent ones each read, nine lose the swap and read again — O(n²) etcd round trips
/// for n applies — where taking turns costs n.
public final class Turns: Sendable {
    private let state = Locked(State())

    private struct State {
        /// key → the waiters behind the task whose turn it is (present while one holds it).
        var queues: [String: [Waiter]] = [:]
        /// The id of the last waiter.
        var lastID: UInt64 = 0
    }

    private struct Waiter {
        let id: UInt64
        let continuation: CheckedContinuation<Void, any Error>
    }

    /// An empty set of queues.
    public init() {}

    /// Runs `body` once it is this task's turn for `key`.
    /// - Throws: `CancellationError` when the task is cancelled while waiting; what `body` throws.
    public func run<T: Sendable>(_ key: String, _ body: () async throws -> T) async throws -> T {
        try await take(key)
        defer { handOn(key) }
        return try await body()
    }

    /// How many tasks hold or wait for a turn of `key` (tests).
    public func count(_ key: String) -> Int {
        state.withLock { s in s.queues[key].map { $0.count + 1 } ?? 0 }
    }

    private func take(_ key: String) async throws {
        let id = state.withLock { s in
            s.lastID += 1
            return s.lastID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                enum Start { case now, queued, cancelled }
                // Under the lock with the cancellation handler's removal: a task cancelled
                // before it queued is refused here, one cancelled after is removed there.
                let start: Start = state.withLock { s in
                    guard var queue = s.queues[key] else {
                        s.queues[key] = []
                        return .now
                    }
                    if Task.isCancelled { return .cancelled }
                    queue.append(Waiter(id: id, continuation: continuation))
                    s.queues[key] = queue
                    return .queued
                }
                switch start {
                case .now: continuation.resume()
                case .cancelled: continuation.resume(throwing: CancellationError())
                case .queued: break
                }
            }
        } onCancel: {
            let removed: Waiter? = state.withLock { s in
                guard let index = s.queues[key]?.firstIndex(where: { $0.id == id }) else { return nil }
                return s.queues[key]?.remove(at: index)
            }
            removed?.continuation.resume(throwing: CancellationError())
        }
    }

    private func handOn(_ key: String) {
        let next: Waiter? = state.withLock { s in
            guard var queue = s.queues[key], !queue.isEmpty else {
                s.queues[key] = nil
                return nil
            }
            let first = queue.removeFirst()
            s.queues[key] = queue
            return first
        }
        next?.continuation.resume()
    }
}
