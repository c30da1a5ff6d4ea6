import EtcdClient
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore

/// The usage meter's cursor: the start (epoch seconds, as decimal text) of the last interval
/// fully metered, at `/gpuplane/meter/cursor` (``KeySpace/meterCursor``). The scheduler leader
/// moves it forward with a compare-and-swap on its mod revision, in a fenced transaction.
public struct MeterCursor: Sendable {
    /// Where the cursor is read, with the revision that write was made at.
    public struct Position: Sendable, Hashable {
        /// The start of the last interval fully metered, epoch seconds.
        public var intervalStart: Int64
        /// The key's mod revision: what a move compares.
        public var revision: Int64

        /// Makes a position.
        public init(intervalStart: Int64, revision: Int64) {
            self.intervalStart = intervalStart
            self.revision = revision
        }
    }

    /// The cursor's key (``KeySpace/meterCursor`` unless a test chose another).
    public let key: String
    private let client: Etcd.Client

    /// The cursor in `store`'s etcd, at `key`.
    public init(store: ResourceStore, key: String = KeySpace.meterCursor) {
        self.key = key
        client = store.client
    }

    /// The cursor, or nil when it was never set (a new cluster) or holds no number.
    /// - Throws: ``StoreError/Code/unavailable``.
    public func read() async throws -> Position? {
        let kv: Etcd.KeyValue?
        do { kv = try await client.get(key) } catch let e as EtcdError { throw StoreError.etcd(e) }
        guard let kv, let start = Int64(String(decoding: kv.value, as: UTF8.self)) else { return nil }
        return Position(intervalStart: start, revision: kv.modRevision)
    }

    /// Adds to `txn` the cursor's move to `intervalStart`, holding only if the key is still at
    /// `revision` (0: never written). Its new revision is the transaction's. When it moved
    /// meanwhile, the transaction fails with ``StoreError/Code/preconditionFailed`` and `tag`.
    public func move(
        to intervalStart: Int64, ifAt revision: Int64, in txn: inout StoreTransaction, reason: String,
        tag: StoreTransaction.ConditionTag? = nil
    ) {
        txn.set(key, to: Data(String(intervalStart).utf8), ifModRevision: revision, reason: reason, tag: tag)
    }
}
