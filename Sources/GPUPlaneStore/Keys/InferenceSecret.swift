import EtcdClient
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore

/// The cluster's one inference secret, the HMAC key of inference URLs, at
/// `/gpuplane/system/inference-secret` (``KeySpace/inferenceSecret``). The first api-server
/// that needs it creates it; racing ones agree on the first written.
public struct InferenceSecret: Sendable {
    private let client: Etcd.Client

    /// The secret in `store`'s etcd.
    public init(store: ResourceStore) { client = store.client }

    /// The stored secret; when there is none yet, `fresh()` is stored, create-if-absent, and
    /// whichever api-server's secret was written first is returned.
    /// - Throws: ``StoreError/Code/unavailable`` when etcd fails; ``StoreError/Code/conflict``
    ///   in the rare case the secret was deleted between a lost race and its read.
    public func value(creatingWith fresh: () -> Data) async throws -> Data {
        let key = KeySpace.inferenceSecret
        do {
            if let stored = try await client.get(key) { return stored.value }
            let made = fresh()
            let response = try await client.txn(
                compare: [.createRevision(key, .equal, 0)],
                success: [.put(Etcd.PutRequest(key: Data(key.utf8), value: made))],
                failure: [.range(Etcd.RangeRequest(.key(key)))])
            if response.succeeded { return made }
            if case .range(let range)? = response.responses.first, let kv = range.kvs.first {
                return kv.value  // another api-server made it first
            }
            throw StoreError(code: .conflict, message: "the inference secret vanished while being made", key: key)
        } catch let e as EtcdError {
            throw StoreError.etcd(e)
        }
    }
}
