import Foundation
import GPUPlaneCore
import Synchronization

/// `max_batch_size` admission for deployments: at most that many requests in flight on each
/// instance (counted by this api-server); the rest wait their turn, first come first served,
/// and take the first slot that frees on any instance.
///
/// A wait is bounded twice: at most ``maxWaitingPerSlot`` waiters per free-able slot
/// (`instances × max_batch_size`), and at most `timeout` each. Either bound answers 429 with
/// `Retry-After`, so a client backs off instead of piling up.
final class BatchAdmission: Sendable {
    /// Waiters allowed per slot (per instance and unit of `max_batch_size`).
    static let maxWaitingPerSlot = 16

    /// A granted slot: the instance to send to, and the function that gives the slot back (once).
    struct Slot: Sendable {
        let instance: String
        let release: @Sendable () -> Void
    }

    private struct Waiter {
        let id: UInt64
        let continuation: CheckedContinuation<String, any Error>
    }

    private struct Queue {
        var inFlight: [String: Int] = [:]
        var instances: [String] = []
        var limit = 1
        var waiters: [Waiter] = []

        /// The instance with a free slot and the fewest in flight, if any.
        func free() -> String? {
            instances.filter { (inFlight[$0] ?? 0) < limit }.min { (inFlight[$0] ?? 0) < (inFlight[$1] ?? 0) }
        }

        /// Hands free slots to waiters in arrival order; returns who gets which instance.
        mutating func dispatch() -> [(Waiter, String)] {
            var granted: [(Waiter, String)] = []
            while !waiters.isEmpty, let instance = free() {
                inFlight[instance, default: 0] += 1
                granted.append((waiters.removeFirst(), instance))
            }
            return granted
        }
    }

    /// The queues, and the load seen since the last ``drainLoad()``.
    private struct State {
        var queues: [String: Queue] = [:]
        /// deployment → the most requests in flight or waiting at once since the last drain.
        var peaks: [String: Int] = [:]
        /// Deployments that turned requests away for want of a ready instance since the last drain.
        var cold: Set<String> = []
        /// deployment → requests finished since the last drain.
        var completed: [String: Int] = [:]
        /// deployment → completion tokens the answers reported since the last drain.
        var tokens: [String: Int] = [:]
        /// deployment → requests held now until an instance is ready (a start from zero).
        var held: [String: Int] = [:]

        mutating func notePeak(_ deployment: String) {
            guard let queue = queues[deployment] else { return }
            let load = queue.inFlight.values.reduce(0, +) + queue.waiters.count
            peaks[deployment] = max(peaks[deployment] ?? 0, load)
        }
    }

    private let state = Mutex(State())
    private let nextID = Atomic<UInt64>(0)
    let timeout: Duration

    init(timeout: Duration) { self.timeout = timeout }

    /// Requests waiting, over every deployment.
    var waiting: Int { state.withLock { $0.queues.values.reduce(0) { $0 + $1.waiters.count } } }

    /// Notes a request turned away because `deployment` had no ready instance: demand the
    /// autoscaler should meet with at least one.
    func recordCold(_ deployment: String) { _ = state.withLock { $0.cold.insert(deployment) } }

    /// Counts a request held until `deployment` has a ready instance: every load report while
    /// it is held says `cold` (demand for at least one instance, shared by every held caller)
    /// and counts it as `queued`. The returned function ends the hold (once).
    func hold(_ deployment: String) -> @Sendable () -> Void {
        state.withLock { s in
            s.held[deployment, default: 0] += 1
            s.cold.insert(deployment)
        }
        let done = Atomic<Bool>(false)
        return { [self] in
            guard !done.exchange(true, ordering: .relaxed) else { return }
            state.withLock { s in
                s.held[deployment, default: 1] -= 1
                if s.held[deployment] == 0 { s.held[deployment] = nil }
            }
        }
    }

    /// Requests held now until `deployment` has a ready instance.
    func held(_ deployment: String) -> Int { state.withLock { $0.held[deployment] ?? 0 } }

    /// The load of each deployment seen since the last call (the most requests in flight or
    /// waiting for a slot at once, and whether any found no ready instance or is held for one
    /// now); starts the next window at each
    /// deployment's load now, so a long request keeps counting.
    func drainLoad() -> [String: DeploymentLoad] {
        state.withLock { s in
            var loads: [String: DeploymentLoad] = [:]
            for (deployment, peak) in s.peaks { loads[deployment] = DeploymentLoad(peak: peak) }
            for deployment in s.cold.union(s.held.keys) { loads[deployment, default: DeploymentLoad(peak: 0)].cold = true }
            for (deployment, count) in s.completed { loads[deployment, default: DeploymentLoad(peak: 0)].requests = count }
            for (deployment, count) in s.tokens { loads[deployment, default: DeploymentLoad(peak: 0)].completionTokens = count }
            for deployment in loads.keys {
                let queue = s.queues[deployment]
                loads[deployment]?.inFlight = queue?.inFlight.values.reduce(0, +) ?? 0
                loads[deployment]?.queued = (queue?.waiters.count ?? 0) + (s.held[deployment] ?? 0)
            }
            s.peaks = [:]
            s.cold = []
            s.completed = [:]
            s.tokens = [:]
            for deployment in s.queues.keys { s.notePeak(deployment) }
            return loads
        }
    }

    /// A slot on one of `instances` of `deployment`, at most `limit` in flight on each; waits
    /// for one when all are busy.
    /// - Throws: ``APIError`` 429 when too many wait or the wait runs out;
    ///   `CancellationError` when the caller goes away while waiting.
    func acquire(deployment: String, instances: [String], limit: Int) async throws -> Slot {
        let id = nextID.add(1, ordering: .relaxed).newValue
        let instance: String = try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<String, any Error>) in
                if Task.isCancelled {
                    continuation.resume(throwing: CancellationError())
                    return
                }
                let (granted, refused) = state.withLock { s -> ([(Waiter, String)], APIError?) in
                    var queue = s.queues[deployment] ?? Queue()
                    queue.instances = instances
                    queue.limit = max(1, limit)
                    let capacity = Self.maxWaitingPerSlot * queue.limit * max(1, instances.count)
                    var refused: APIError?
                    if queue.waiters.count >= capacity {
                        refused = Self.overloaded("\(queue.waiters.count) requests already wait for \(deployment) (at most \(capacity): \(Self.maxWaitingPerSlot) per slot of max_batch_size \(queue.limit) on \(instances.count) instance(s))")
                    } else {
                        queue.waiters.append(Waiter(id: id, continuation: continuation))
                    }
                    let granted = queue.dispatch()
                    s.queues[deployment] = queue
                    s.notePeak(deployment)
                    return (granted, refused)
                }
                if let refused { continuation.resume(throwing: refused) }
                for (waiter, instance) in granted { waiter.continuation.resume(returning: instance) }
                if refused == nil, !granted.contains(where: { $0.0.id == id }) { scheduleTimeout(id: id, deployment: deployment) }
            }
        } onCancel: {
            giveUp(id: id, deployment: deployment, with: CancellationError())
        }
        let released = Atomic<Bool>(false)
        return Slot(instance: instance) { [self] in
            guard !released.exchange(true, ordering: .relaxed) else { return }
            release(instance, deployment: deployment)
        }
    }

    /// Adds `count` completion tokens an answer of `deployment` reported.
    func recordTokens(_ deployment: String, _ count: Int) {
        guard count > 0 else { return }
        state.withLock { $0.tokens[deployment, default: 0] += count }
    }

    private func release(_ instance: String, deployment: String) {
        let granted = state.withLock { s -> [(Waiter, String)] in
            s.completed[deployment, default: 0] += 1
            guard var queue = s.queues[deployment] else { return [] }
            queue.inFlight[instance, default: 1] -= 1
            if queue.inFlight[instance] == 0 { queue.inFlight[instance] = nil }
            let granted = queue.dispatch()
            s.queues[deployment] = queue.inFlight.isEmpty && queue.waiters.isEmpty ? nil : queue
            return granted
        }
        for (waiter, instance) in granted { waiter.continuation.resume(returning: instance) }
    }

    private func scheduleTimeout(id: UInt64, deployment: String) {
        let timeout = self.timeout
        Task { [self] in
            try? await Task.sleep(for: timeout)
            giveUp(id: id, deployment: deployment, with: Self.overloaded("waited \(timeout) for a free slot of \(deployment); every instance is at max_batch_size"))
        }
    }

    /// Removes a waiter that is still waiting and fails it with `error`.
    private func giveUp(id: UInt64, deployment: String, with error: any Error) {
        let waiter = state.withLock { s -> Waiter? in
            guard var queue = s.queues[deployment], let index = queue.waiters.firstIndex(where: { $0.id == id }) else { return nil }
            let waiter = queue.waiters.remove(at: index)
            s.queues[deployment] = queue.inFlight.isEmpty && queue.waiters.isEmpty ? nil : queue
            return waiter
        }
        waiter?.continuation.resume(throwing: error)
    }

    static func overloaded(_ message: String) -> APIError {
        var error = APIError(.tooManyRequests, .overloaded, message)
        error.retryAfter = 1
        return error
    }
}
