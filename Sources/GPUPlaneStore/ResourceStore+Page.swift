import EtcdClient
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore

/// At most a page of the objects of one kind, in key order (tenant, then name), and where to
/// go on from.
public struct ResourcePage<R: Resource>: Sendable {
    /// The objects, ordered by key.
    public var items: [R]
    /// The store's revision the page was read at.
    public var revision: Int64
    /// The storage key of the last object read, to pass as `after` for the next page; nil
    /// once the kind has no object after this page.
    public var next: String?
}

extension ResourceStore {
    /// Up to `limit` objects of one kind, of every tenant, whose storage keys come after
    /// `after` (nil: from the first), in key order, in one range read: a scan over a kind too
    /// large to list at once (the scheduler's usage retention pages through usage records).
    /// - Throws: ``StoreError/Code/unavailable``; ``StoreError/Code/corrupt`` for an object
    ///   that does not decode.
    public func page<R: Resource>(_ type: R.Type, after: String? = nil, limit: Int) async throws -> ResourcePage<R> {
        let prefix = Data(R.storagePrefix(tenant: nil).utf8)
        let from = after.map { Data($0.utf8) + Data([0]) } ?? prefix
        let end = Etcd.prefixEnd(prefix)
        do {
            let answer = try await client.range(
                Etcd.RangeRequest(Etcd.KeyRange(key: from, rangeEnd: end), limit: Int64(max(1, limit))))
            let items = try answer.kvs.map { try Self.decode(R.self, $0) }
            return ResourcePage(
                items: items, revision: answer.header.revision,
                next: answer.more ? answer.kvs.last?.keyString : nil)
        } catch let e as EtcdError {
            throw StoreError.etcd(e)
        }
    }
}
