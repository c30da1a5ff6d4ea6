import EtcdClient
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore

/// The bearer-token index: `/gpuplane/tokens/<sha256>` → ``TokenRecord`` (``KeySpace/tokens``).
/// Only hashes are stored; the secrets are shown once, when issued.
///
/// Every method throws ``StoreError`` (``StoreError/Code/unavailable`` when etcd fails).
public struct TokenIndex: Sendable {
    private let store: ResourceStore
    private var client: Etcd.Client { store.client }

    /// The index in `store`'s etcd.
    public init(store: ResourceStore) { self.store = store }

    /// Stores `record` under its hash (``TokenRecord/sha256``), replacing any record there.
    public func add(_ record: TokenRecord) async throws {
        let value = try Self.encode(record)
        do { _ = try await client.put(KeySpace.token(sha256: record.sha256), value) } catch let e as EtcdError {
            throw StoreError.etcd(e)
        }
    }

    /// The record of the token whose secret hashes to `sha256`; nil when there is none, or
    /// when what is stored there is not a record (such a token authenticates no one).
    public func record(sha256: String) async throws -> TokenRecord? {
        let kv: Etcd.KeyValue?
        do { kv = try await client.get(KeySpace.token(sha256: sha256)) } catch let e as EtcdError { throw StoreError.etcd(e) }
        return kv.flatMap { Self.decode($0.value) }
    }

    /// A deleted token: its hash and the revision of the delete.
    public struct Removal: Sendable, Hashable {
        /// The hash of the deleted token.
        public var sha256: String
        /// The etcd revision of the delete.
        public var revision: Int64
        /// Makes a removal.
        public init(sha256: String, revision: Int64) {
            self.sha256 = sha256
            self.revision = revision
        }
    }

    /// Deletes the token whose hash starts with `hashPrefix` (a public id's 12 digits; the
    /// first in key order if several do). Returns what was deleted; nil when none was there.
    public func remove(hashPrefix: String) async throws -> Removal? {
        do {
            let matches = try await client.range(.prefix(KeySpace.token(sha256: hashPrefix)), limit: 1)
            guard let kv = matches.kvs.first, let sha256 = KeySpace.sha256(ofTokenKey: kv.keyString) else { return nil }
            let deleted = try await client.delete(.key(kv.key))
            guard deleted.deleted > 0 else { return nil }
            return Removal(sha256: sha256, revision: deleted.header.revision)
        } catch let e as EtcdError {
            throw StoreError.etcd(e)
        }
    }

    /// A change to the index: a token's record written (`record` set) or deleted (nil; also
    /// for a value that is not a record, which authenticates no one).
    public struct Change: Sendable, Hashable {
        /// The token's hash.
        public var sha256: String
        /// The record now stored; nil when deleted.
        public var record: TokenRecord?
        /// The etcd revision of the change.
        public var revision: Int64
    }

    /// Every record in the index, by hash, and the revision they were read at.
    public func list() async throws -> (records: [String: TokenRecord], revision: Int64) {
        do {
            let listed = try await client.range(.prefix(KeySpace.tokens))
            var records: [String: TokenRecord] = [:]
            for kv in listed.kvs {
                if let hash = KeySpace.sha256(ofTokenKey: kv.keyString), let record = Self.decode(kv.value) { records[hash] = record }
            }
            return (records, listed.header.revision)
        } catch let e as EtcdError {
            throw StoreError.etcd(e)
        }
    }

    /// The changes from `revision` on, one array per etcd message, in revision order (empty
    /// when the message carried only progress). Ends by throwing ``StoreError`` (code
    /// ``StoreError/Code/compacted`` when `revision` was compacted away: list again); without
    /// error when the consuming task is cancelled.
    public func watch(from revision: Int64) -> AsyncThrowingStream<[Change], any Error> {
        store.watchKeys(.prefix(KeySpace.tokens), from: revision, progressNotify: true) { batch in
            batch.events.compactMap { event in
                KeySpace.sha256(ofTokenKey: event.kv.keyString).map { hash in
                    Change(sha256: hash, record: event.type == .put ? Self.decode(event.kv.value) : nil, revision: event.revision)
                }
            }
        }
    }

    /// The record stored in `value`; nil when it is not one (it authenticates no one).
    private static func decode(_ value: Data) -> TokenRecord? { try? GPUPlaneJSON.decode(TokenRecord.self, from: value) }

    private static func encode(_ record: TokenRecord) throws -> Data {
        do { return try GPUPlaneJSON.encode(record) } catch {
            throw StoreError(code: .invalid, message: "cannot encode token record \(record.id): \(error)")
        }
    }
}
