import EtcdClient
import Foundation
import GPUPlaneCore

/// Node liveness: one key per node, `/gpuplane/heartbeats/<node>` (``KeySpace/heartbeats``),
/// on a lease the api-server renews on each of the node-agent's heartbeats. When the agent
/// stops calling, the lease expires, etcd deletes the key, and the scheduler's watch sees it.
///
/// Every method throws ``StoreError`` (``StoreError/Code/unavailable`` when etcd fails).
public struct NodeHeartbeats: Sendable {
    /// A heartbeat key that appeared or went.
    public struct Change: Sendable, Hashable {
        /// The node.
        public var node: String
        /// True when the key was written (a new lease), false when it went (its lease
        /// expired, or the node was deleted).
        public var live: Bool

        /// Makes a change.
        public init(node: String, live: Bool) {
            self.node = node
            self.live = live
        }
    }

    private let store: ResourceStore
    private var client: Etcd.Client { store.client }

    /// The heartbeats in `store`'s etcd.
    public init(store: ResourceStore) { self.store = store }

    /// Renews `node`'s lease. Returns false when there is nothing to renew (no key, or its
    /// lease expired meanwhile): then ``start(node:ttl:)`` a new one.
    public func renew(node: String) async throws -> Bool {
        do {
            guard let kv = try await client.get(KeySpace.heartbeat(node: node)), kv.lease != 0 else { return false }
            return try await client.keepAliveOnce(kv.lease).ttl > 0
        } catch let e as EtcdError where e.code == .leaseNotFound {
            return false  // expired between the read and the renewal
        } catch let e as EtcdError {
            throw StoreError.etcd(e)
        }
    }

    /// Writes `node`'s key (the time now, ISO-8601) under a new lease of `ttl` seconds. A
    /// lease that expired before the write (a short `ttl` on a slow etcd) is replaced by a new
    /// one, twice at most.
    public func start(node: String, ttl: Int64) async throws {
        var attempt = 0
        while true {
            do {
                let lease = try await client.grantLease(ttl: ttl)
                _ = try await client.put(KeySpace.heartbeat(node: node), ISO8601DateFormatter().string(from: Date()), lease: lease.id)
                return
            } catch let e as EtcdError where e.code == .leaseNotFound && attempt < 2 {
                attempt += 1
            } catch let e as EtcdError {
                throw StoreError.etcd(e)
            }
        }
    }

    /// Deletes `node`'s key at once (its lease would expire on its own within the TTL).
    public func remove(node: String) async throws {
        do { _ = try await client.delete(.key(KeySpace.heartbeat(node: node))) } catch let e as EtcdError {
            throw StoreError.etcd(e)
        }
    }

    /// The nodes whose key exists, and the revision they were read at: watch from
    /// `revision + 1` to miss nothing.
    public func list() async throws -> (nodes: Set<String>, revision: Int64) {
        do {
            let listed = try await client.range(.prefix(KeySpace.heartbeats), keysOnly: true)
            return (Set(listed.kvs.compactMap { KeySpace.node(ofHeartbeatKey: $0.keyString) }), listed.header.revision)
        } catch let e as EtcdError {
            throw StoreError.etcd(e)
        }
    }

    /// The keys that appear and go from `revision` on, one array per etcd message, in
    /// revision order (empty when the message carried only progress). Ends by throwing
    /// ``StoreError/Code/compacted`` when `revision` was compacted away (list again),
    /// ``StoreError/Code/unavailable`` on other failures; without error when the consuming
    /// task is cancelled.
    public func watch(from revision: Int64) -> AsyncThrowingStream<[Change], any Error> {
        store.watchKeys(.prefix(KeySpace.heartbeats), from: revision) { batch in
            batch.events.compactMap { event in
                KeySpace.node(ofHeartbeatKey: event.kv.keyString).map { Change(node: $0, live: event.type == .put) }
            }
        }
    }
}
