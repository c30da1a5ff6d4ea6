import EtcdClient
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// What a leader's writes are fenced on: its election key (under ``KeySpace/schedulerElection``
/// for the scheduler), as long as it still exists at the revision it was created at. Made
/// from the election's leader key by whoever campaigns; everything else commits with
/// ``StoreTransaction/require(_:reason:tag:)-(LeaderFence,_,_)`` and never sees etcd.
public struct LeaderFence: Sendable, Hashable {
    private let leaderKey: Data
    /// The revision the key was created at: the term's number, newer for every new leader.
    public let revision: Int64

    /// The fence of the leadership held with `leader`.
    public init(_ leader: Etcd.LeaderKey) {
        leaderKey = leader.key
        revision = leader.revision
    }

    /// The leader's key, for logs.
    public var key: String { String(decoding: leaderKey, as: UTF8.self) }

    /// `create_revision(key) == revision`: holds exactly while this leadership lasts.
    var compare: Etcd.Compare { Etcd.Compare(.key(leaderKey), .equal, .createRevision(revision)) }
}

extension StoreTransaction {
    /// Adds `fence` as a condition: the transaction commits only while that leadership lasts;
    /// otherwise it fails with ``StoreError/Code/preconditionFailed``, `failedCondition =
    /// reason` and `failedConditionTag = tag`.
    public mutating func require(_ fence: LeaderFence, reason: String, tag: ConditionTag? = nil) {
        require(fence.compare, reason: reason, tag: tag)
    }
}

extension RotatingLease {
    /// The lease to write under now in `store`'s etcd (see ``lease(etcd:now:)``).
    /// - Throws: ``StoreError/Code/unavailable``.
    public func lease(in store: ResourceStore, now: ContinuousClock.Instant = .now) async throws -> Int64 {
        do { return try await lease(etcd: store.client, now: now) } catch let e as EtcdError { throw StoreError.etcd(e) }
    }
}
