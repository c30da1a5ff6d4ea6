import Foundation
import Synchronization

/// Callers of deployments that have no ready instance, parked until the gateway's replica
/// informer delivers a change that may have made one ready (``wake(_:)``), until their time runs
/// out, or until they go away.
///
/// A caller registers before it looks again (`ready`), so an instance that turns ready between
/// the caller's first look and its registration is never missed: either the look sees it, or the
/// informer's event comes after the registration and wakes it. Waking is a hint: the woken
/// caller reads the informer's cache again and waits again if it still finds nothing.
final class ColdStarts: Sendable {
    /// How a wait ended.
    enum Outcome: Sendable, Equatable {
        /// Woken by a change (or the instance was ready already): look again.
        case woken
        /// The deadline passed first.
        case timedOut
    }

    private struct Waiter {
        let continuation: CheckedContinuation<Outcome, any Error>
        var timer: Task<Void, Never>?
    }

    /// deployment key (`<tenant>/<name>`) → waiter id → waiter.
    private let waiters = Mutex<[String: [UInt64: Waiter]]>([:])
    private let nextID = Atomic<UInt64>(0)

    /// Callers waiting now for `deployment`.
    func waiting(_ deployment: String) -> Int { waiters.withLock { $0[deployment]?.count ?? 0 } }

    /// Waits for a change to `deployment`'s instances, at most until `deadline`.
    ///
    /// `ready` is asked once the caller is registered; when it says yes the wait ends at once.
    /// - Throws: `CancellationError` when the calling task is cancelled (the caller went away).
    func wait(for deployment: String, until deadline: ContinuousClock.Instant, ready: () -> Bool) async throws -> Outcome {
        let id = nextID.add(1, ordering: .relaxed).newValue
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Outcome, any Error>) in
                if Task.isCancelled {
                    continuation.resume(throwing: CancellationError())
                    return
                }
                waiters.withLock { $0[deployment, default: [:]][id] = Waiter(continuation: continuation) }
                let isReady = ready()
                if isReady || ContinuousClock.now >= deadline {
                    finish(id, of: deployment, with: .success(isReady ? .woken : .timedOut))
                    return
                }
                let timer = Task { [self] in
                    try? await Task.sleep(until: deadline, clock: .continuous)
                    guard !Task.isCancelled else { return }
                    finish(id, of: deployment, with: .success(.timedOut))
                }
                // The waiter may have been woken already; then the timer is not needed.
                let kept = waiters.withLock { w -> Bool in
                    guard w[deployment]?[id] != nil else { return false }
                    w[deployment]?[id]?.timer = timer
                    return true
                }
                if !kept { timer.cancel() }
            }
        } onCancel: {
            finish(id, of: deployment, with: .failure(CancellationError()))
        }
    }

    /// Wakes every caller waiting for `deployment`.
    func wake(_ deployment: String) {
        let woken = waiters.withLock { $0.removeValue(forKey: deployment) } ?? [:]
        for waiter in woken.values {
            waiter.timer?.cancel()
            waiter.continuation.resume(returning: .woken)
        }
    }

    /// Ends one waiter, if it still waits.
    private func finish(_ id: UInt64, of deployment: String, with result: Result<Outcome, any Error>) {
        let waiter = waiters.withLock { w -> Waiter? in
            guard let waiter = w[deployment]?.removeValue(forKey: id) else { return nil }
            if w[deployment]?.isEmpty == true { w[deployment] = nil }
            return waiter
        }
        guard let waiter else { return }
        waiter.timer?.cancel()
        waiter.continuation.resume(with: result)
    }
}
