import EtcdClient
import GPUPlaneSystem

/// An etcd lease for keys that should live `ttl` after their last write and then vanish, even
/// with nobody left to delete them: one lease serves every write made during ``rotation`` (a
/// quarter of `ttl`, at least a second) and lives `ttl + rotation`, so etcd deletes a key
/// between `ttl` and `ttl + rotation` after its last write; a key written again moves to the
/// newest lease and stays.
///
/// The scheduler writes events under one (like Kubernetes' `--event-ttl`), so one-shot events
/// cannot fill etcd; api-servers write their load reports under one, so the reports of an
/// api-server that stopped go with it.
public final class RotatingLease: Sendable {
    /// Time to live of a key after its last write.
    public let ttl: Duration
    private let current = Locked<(id: Int64, granted: ContinuousClock.Instant)?>(nil)

    /// Makes a lease source; nothing is granted until ``lease(etcd:now:)``.
    public init(ttl: Duration) { self.ttl = ttl }

    /// How long one lease takes new writes: a quarter of the time to live, at least a second.
    public var rotation: Duration { max(.seconds(1), ttl / 4) }

    /// The lease to write under now, granting a new one when the current one has taken writes
    /// for ``rotation``. Its time to live is `ttl + rotation`, in whole seconds, so a key written
    /// just before the next rotation still lives `ttl`.
    public func lease(etcd: Etcd.Client, now: ContinuousClock.Instant = .now) async throws -> Int64 {
        if let lease = current.withLock({ $0 }), now - lease.granted < rotation { return lease.id }
        let seconds = (ttl + rotation).wholeSecondsRoundedUp
        let granted = try await etcd.grantLease(ttl: max(1, seconds))
        current.withLock { $0 = (granted.id, now) }
        return granted.id
    }
}
