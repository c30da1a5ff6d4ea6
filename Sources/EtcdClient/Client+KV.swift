#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

extension Etcd.Client {
    /// Reads keys. Maps to `POST /v3/kv/range`. Retried on another member when one fails.
    ///
    /// - Throws: ``EtcdError`` with code ``EtcdError/Code/compacted`` when `revision` was
    ///   compacted away, ``EtcdError/Code/futureRevision`` when it is newer than the store.
    public func range(_ request: Etcd.RangeRequest) async throws -> Etcd.RangeResponse {
        do {
            return try await call("/v3/kv/range", request, retry: .idempotent)
        } catch let error as EtcdError where error.grpcCode == GRPCStatus.outOfRange && request.revision > 0 {
            // etcd reports both "compacted" and "future revision" as OutOfRange; tell them
            // apart by the store's current revision instead of by the message.
            func typed(_ code: EtcdError.Code) -> EtcdError {
                var typed = code == .compacted ? EtcdError.compacted(nil) : EtcdError(code: code, message: error.message)
                typed.grpcCode = error.grpcCode
                typed.httpStatus = error.httpStatus
                typed.endpoint = error.endpoint
                return typed
            }
            let now = try await call(
                "/v3/kv/range", Etcd.RangeRequest(request.range, countOnly: true), retry: .idempotent,
                as: Etcd.RangeResponse.self)
            if request.revision > now.header.revision { throw typed(.futureRevision) }
            // The revision exists now: it was compacted, or it was still in the future when
            // the first read was answered and a write made it since (a busy store: a node's
            // watch resumed from the revision of the list it just read asks for the next one,
            // which taken for compacted sent the watch to etcd rather than to the api-server's
            // cache). Read again: only OutOfRange again means compacted.
            do {
                return try await call("/v3/kv/range", request, retry: .idempotent)
            } catch let again as EtcdError where again.grpcCode == GRPCStatus.outOfRange {
                throw typed(.compacted)
            }
        }
    }

    /// Reads keys in `range`. Maps to `POST /v3/kv/range`.
    public func range(
        _ range: Etcd.KeyRange, revision: Int64 = 0, limit: Int64 = 0, keysOnly: Bool = false,
        countOnly: Bool = false, sortOrder: Etcd.SortOrder = .none, sortTarget: Etcd.SortTarget = .key,
        serializable: Bool = false
    ) async throws -> Etcd.RangeResponse {
        try await self.range(
            Etcd.RangeRequest(
                range, revision: revision, limit: limit, keysOnly: keysOnly, countOnly: countOnly,
                sortOrder: sortOrder, sortTarget: sortTarget, serializable: serializable))
    }

    /// Reads one key; nil when it does not exist. Maps to `POST /v3/kv/range`.
    public func get(_ key: String, revision: Int64 = 0) async throws -> Etcd.KeyValue? {
        try await range(.key(key), revision: revision).kvs.first
    }

    /// Writes one key. Maps to `POST /v3/kv/put`. Retried on another member only when the
    /// request provably never reached the first.
    public func put(_ request: Etcd.PutRequest) async throws -> Etcd.PutResponse {
        try await call("/v3/kv/put", request, retry: .onlyIfNotSent)
    }

    /// Writes `value` at `key`. Maps to `POST /v3/kv/put`.
    @discardableResult
    public func put(_ key: String, _ value: String, lease: Int64 = 0, prevKV: Bool = false) async throws
        -> Etcd.PutResponse
    {
        try await put(Etcd.PutRequest(key, value, lease: lease, prevKV: prevKV))
    }

    /// Writes bytes at `key`. Maps to `POST /v3/kv/put`.
    @discardableResult
    public func put(_ key: String, _ value: Data, lease: Int64 = 0, prevKV: Bool = false) async throws
        -> Etcd.PutResponse
    {
        try await put(Etcd.PutRequest(key: Data(key.utf8), value: value, lease: lease, prevKV: prevKV))
    }

    /// Deletes keys. Maps to `POST /v3/kv/deleterange`. Retried on another member only when
    /// the request provably never reached the first (a repeat would misreport `deleted`).
    public func deleteRange(_ request: Etcd.DeleteRangeRequest) async throws -> Etcd.DeleteRangeResponse {
        try await call("/v3/kv/deleterange", request, retry: .onlyIfNotSent)
    }

    /// Deletes a key, prefix or range. Maps to `POST /v3/kv/deleterange`.
    @discardableResult
    public func delete(_ range: Etcd.KeyRange, prevKV: Bool = false) async throws -> Etcd.DeleteRangeResponse {
        try await deleteRange(Etcd.DeleteRangeRequest(range, prevKV: prevKV))
    }

    /// Runs a transaction. Maps to `POST /v3/kv/txn`. Retried on another member only when
    /// the request provably never reached the first.
    public func txn(_ request: Etcd.TxnRequest) async throws -> Etcd.TxnResponse {
        try await call("/v3/kv/txn", request, retry: .onlyIfNotSent)
    }

    /// Runs `if compare then success else failure`. Maps to `POST /v3/kv/txn`.
    public func txn(
        compare: [Etcd.Compare], success: [Etcd.RequestOp], failure: [Etcd.RequestOp] = []
    ) async throws -> Etcd.TxnResponse {
        try await txn(Etcd.TxnRequest(compare: compare, success: success, failure: failure))
    }

    /// Compacts the history up to `revision`. Maps to `POST /v3/kv/compaction`.
    /// `physical` waits until the compaction is applied to the backend.
    @discardableResult
    public func compact(revision: Int64, physical: Bool = false) async throws -> Etcd.ResponseHeader {
        struct Body: Encodable {
            var revision: String
            var physical: Bool?
        }
        return try await call(
            "/v3/kv/compaction", Body(revision: String(revision), physical: physical ? true : nil),
            retry: .idempotent, as: HeaderOnlyResponse.self
        ).header
    }
}
