import EtcdClient
import Foundation
import GPUPlaneCore

/// The bearer-token index: `/gpuplane/tokens/<sha256>` → ``TokenRecord`` (``KeySpace/tokens``).
/// Only hashes are stored; the secrets are shown once, when issued.
///
/// Every method throws ``StoreError`` (``StoreError/Code/unavailable`` when etcd fails).
public struct TokenIndex: Sendable {
    private let client: Etcd.Client

    /// The index in `store`'s etcd.
    public init(store: ResourceStore) { client = store.client }

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
        return kv.flatMap { try? GPUPlaneJSON.decode(TokenRecord.self, from: $0.value) }
    }

    /// Deletes the token whose hash starts with `hashPrefix` (a public id's 12 digits; the
    /// first in key order if several do). Returns whether one was there.
    public func remove(hashPrefix: String) async throws -> Bool {
        do {
            let matches = try await client.range(.prefix(KeySpace.token(sha256: hashPrefix)), limit: 1)
            guard let kv = matches.kvs.first else { return false }
            _ = try await client.delete(.key(kv.key))
            return true
        } catch let e as EtcdError {
            throw StoreError.etcd(e)
        }
    }

    private static func encode(_ record: TokenRecord) throws -> Data {
        do { return try GPUPlaneJSON.encode(record) } catch {
            throw StoreError(code: .invalid, message: "cannot encode token record \(record.id): \(error)")
        }
    }
}
