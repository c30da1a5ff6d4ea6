import EtcdClient
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore

/// Node liveness: one key per node, `/gpuplane/heartbeats/<node>` (``KeySpace/heartbeats``).
///
/// An api-server keeps the beats of the nodes that call it in memory (`HeartbeatTracker` in
/// GPUPlaneAPI) and writes a node's key only when that changes: `{"server": <its id>,
/// "state": "live"}` on a node's first beat to it, `"silent"` when the node stopped beating.
/// The key lives on the api-server's own lease, so the keys of an api-server that died vanish
/// with it. The scheduler watches the keys (``list()`` + ``watch(from:)``): `silent` is a node
/// that stopped; a key that vanished is a node that must beat to another api-server within the
/// scheduler's grace. A value that is not such JSON (tests and `gpuplane-bench scheduler` write
/// their own keys) counts as live, and its deletion as its expiry.
///
/// Writes go through a group commit of their own (``WriteBatcher``, apart from the objects'):
/// the keys of many nodes written at once (registrations, an api-server taking over another's
/// nodes, a lost lease's keys, a rack gone silent) go to etcd up to 64 to a request rather than
/// a request each.
///
/// Every method throws ``StoreError`` (``StoreError/Code/unavailable`` when etcd fails; the
/// ``StoreError/etcd`` cause says ``EtcdClient/EtcdError/Code/leaseNotFound`` when the lease
/// written under is gone).
public struct NodeHeartbeats: Sendable {
    /// A heartbeat key's value as an api-server writes it.
    public struct Value: Codable, Sendable, Hashable {
        /// Whether the node beats.
        public enum State: String, Codable, Sendable, Hashable {
            /// It beats to ``Value/server``.
            case live
            /// It stopped beating to ``Value/server`` (for longer than its `silent-after`).
            case silent
        }
        /// The id of the api-server that wrote the key (and holds its lease).
        public var server: String
        /// Whether the node beats.
        public var state: State

        /// Makes a value.
        public init(server: String, state: State) {
            self.server = server
            self.state = state
        }

        /// The value in `data`, or nil when it is not an api-server's JSON (a key written by a
        /// test or a benchmark).
        public static func decode(_ data: Data) -> Value? { try? JSONDecoder().decode(Value.self, from: data) }
    }

    /// What a node's key says.
    public enum KeyState: Sendable, Hashable {
        /// The node beats; `server` is nil for a value that is not an api-server's JSON.
        case live(server: String?)
        /// The api-server `server` saw the node stop beating.
        case silent(server: String)
        /// The key went. `expired`: the value it had was not an api-server's JSON (the key of a
        /// test's own lease ran out: the node stopped); otherwise the key went with its
        /// api-server's lease (that api-server stopped) or with its node.
        case deleted(expired: Bool)

        /// The state of a key holding `value`.
        public init(value: Data) {
            switch Value.decode(value) {
            case nil: self = .live(server: nil)
            case let beat? where beat.state == .live: self = .live(server: beat.server)
            case let beat?: self = .silent(server: beat.server)
            }
        }
    }

    /// A heartbeat key written or deleted.
    public struct Change: Sendable, Hashable {
        /// The node.
        public var node: String
        /// What its key says now.
        public var state: KeyState
        /// The revision of the write or deletion.
        public var revision: Int64

        /// Makes a change.
        public init(node: String, state: KeyState, revision: Int64 = 0) {
            self.node = node
            self.state = state
            self.revision = revision
        }
    }

    private let store: ResourceStore
    private var client: Etcd.Client { store.client }
    /// The group commit of heartbeat keys, apart from the objects' (``ResourceStore``'s): a
    /// beat's write never waits behind a batch of applies, nor an apply behind a burst of
    /// beats. Nil when `store` does not batch.
    let batcher: WriteBatcher?

    /// Requests of batched heartbeat writes in flight at once: a burst (an api-server taking
    /// over another's 2,500 nodes) is not written 64 keys per round trip one after another.
    static let batchesInFlight = 4

    /// The heartbeats in `store`'s etcd. Keep one for the life of its user: it owns the group
    /// commit of the keys it writes.
    public init(store: ResourceStore) {
        self.store = store
        self.batcher = store.batcher.map { WriteBatcher(client: $0.client, maxInFlight: Self.batchesInFlight) }
    }

    /// A silent mark withdrawn before it was sent (``markSilent(node:server:lease:wanted:)``'s
    /// `wanted` said no): nothing was written.
    public struct MarkWithdrawn: Error, Sendable {}

    /// Runs `request` through ``batcher`` (alone when there is none): `writes` are the keys it
    /// puts, `reads` the keys it compares; `wanted`, asked just before sending, may withdraw
    /// it (``MarkWithdrawn``).
    private func submit(
        _ request: Etcd.TxnRequest, writes: Set<Data>, reads: Set<Data>, wanted: (@Sendable () -> Bool)? = nil
    ) async throws -> Etcd.TxnResponse {
        guard let batcher else {
            if let wanted, !wanted() { throw MarkWithdrawn() }
            return try await client.txn(request)
        }
        let bytes = request.success.reduce(0) { total, op in
            if case .put(let put) = op { return total + put.key.count + put.value.count }
            return total
        }
        do {
            return try await batcher.submit(request, writes: writes, reads: reads, bytes: bytes, wanted: wanted)
        } catch is WriteBatcher.Withdrawn {
            throw MarkWithdrawn()
        }
    }

    /// Writes `node`'s key `{"server": server, "state": "live"}` under `lease`, whoever held it,
    /// and returns the revision of the write. With `ifNodeExists`, only while the Node object
    /// exists (compared in the same transaction: a node deleted meanwhile gets no key); nil
    /// when it does not. Throws with ``EtcdClient/EtcdError/Code/leaseNotFound`` as cause when
    /// `lease` is gone.
    @discardableResult
    public func writeLive(node: String, server: String, lease: Int64, ifNodeExists: Bool = false) async throws -> Int64? {
        do {
            let value = try Self.encode(Value(server: server, state: .live))
            let put = Etcd.PutRequest(key: Data(KeySpace.heartbeat(node: node).utf8), value: value, lease: lease)
            guard ifNodeExists else {
                return try await submit(Etcd.TxnRequest(success: [.put(put)]), writes: [put.key], reads: []).header.revision
            }
            let nodeKey = KeySpace.object(.node, tenant: ObjectMeta.clusterTenant, name: node)
            let answer = try await submit(
                Etcd.TxnRequest(compare: [.version(nodeKey, .greater, 0)], success: [.put(put)]),
                writes: [put.key], reads: [Data(nodeKey.utf8)])
            return answer.succeeded ? answer.header.revision : nil
        } catch let e as EtcdError {
            throw StoreError.etcd(e)
        }
    }

    /// Writes `node`'s key `{"server": server, "state": "silent"}`, only if the key is still on
    /// `lease` (etcd compares the key's lease in the same transaction): an api-server whose
    /// node moved to another api-server (which wrote the key under its own lease) or was
    /// deleted never marks it silent. Returns the revision of the write, nil when the key was
    /// not on `lease` (nothing written). `wanted`, when given, is asked just before the mark is
    /// sent (a mark may wait behind other keys' writes): false withdraws it unwritten.
    /// - Throws: ``MarkWithdrawn`` when `wanted` said no.
    public func markSilent(node: String, server: String, lease: Int64, wanted: (@Sendable () -> Bool)? = nil) async throws -> Int64? {
        let key = KeySpace.heartbeat(node: node)
        do {
            let value = try Self.encode(Value(server: server, state: .silent))
            let answer = try await submit(
                Etcd.TxnRequest(
                    compare: [.lease(key, .equal, lease)],
                    success: [.put(Etcd.PutRequest(key: Data(key.utf8), value: value, lease: lease))]),
                writes: [Data(key.utf8)], reads: [Data(key.utf8)], wanted: wanted)
            return answer.succeeded ? answer.header.revision : nil
        } catch let e as EtcdError {
            throw StoreError.etcd(e)
        }
    }

    /// Deletes `node`'s key at once (a node being deleted).
    public func remove(node: String) async throws {
        do { _ = try await client.delete(.key(KeySpace.heartbeat(node: node))) } catch let e as EtcdError {
            throw StoreError.etcd(e)
        }
    }

    /// Every heartbeat key's state, and the revision they were read at: watch from
    /// `revision + 1` to miss nothing.
    public func list() async throws -> (keys: [String: KeyState], revision: Int64) {
        do {
            let listed = try await client.range(.prefix(KeySpace.heartbeats))
            var keys: [String: KeyState] = [:]
            Self.add(listed.kvs, to: &keys)
            return (keys, listed.header.revision)
        } catch let e as EtcdError {
            throw StoreError.etcd(e)
        }
    }

    /// What the keys of `nodes` say now, read from etcd (not a watch): nodes without a key are
    /// absent from the answer. Up to 64 nodes are read in one transaction of one range per key;
    /// more, by listing every key.
    public func states(of nodes: Set<String>) async throws -> [String: KeyState] {
        guard nodes.count <= 64 else { return try await list().keys.filter { nodes.contains($0.key) } }
        guard !nodes.isEmpty else { return [:] }
        do {
            let reads = nodes.map { Etcd.RequestOp.range(.init(.key(KeySpace.heartbeat(node: $0)))) }
            let answer = try await client.txn(compare: [], success: reads)
            var keys: [String: KeyState] = [:]
            for case .range(let read) in answer.responses { Self.add(read.kvs, to: &keys) }
            return keys
        } catch let e as EtcdError {
            throw StoreError.etcd(e)
        }
    }

    /// The keys written and deleted from `revision` on, one array per etcd message, in
    /// revision order (empty when the message carried only progress). Ends by throwing
    /// ``StoreError/Code/compacted`` when `revision` was compacted away (list again),
    /// ``StoreError/Code/unavailable`` on other failures; without error when the consuming
    /// task is cancelled.
    public func watch(from revision: Int64) -> AsyncThrowingStream<[Change], any Error> {
        store.watchKeys(.prefix(KeySpace.heartbeats), from: revision, prevKV: true) { batch in
            batch.events.compactMap { event in
                KeySpace.node(ofHeartbeatKey: event.kv.keyString).map { node in
                    switch event.type {
                    case .put:
                        return Change(node: node, state: KeyState(value: event.kv.value), revision: event.revision)
                    case .delete:
                        // Without the previous value (not kept), the grace decides.
                        let expired = event.prevKV.map { Value.decode($0.value) == nil } ?? false
                        return Change(node: node, state: .deleted(expired: expired), revision: event.revision)
                    }
                }
            }
        }
    }

    /// The heartbeat keys among `kvs`, by node, with what each says.
    private static func add(_ kvs: [Etcd.KeyValue], to keys: inout [String: KeyState]) {
        for kv in kvs {
            if let node = KeySpace.node(ofHeartbeatKey: kv.keyString) { keys[node] = KeyState(value: kv.value) }
        }
    }

    private static func encode(_ value: Value) throws -> Data {
        do { return try JSONEncoder().encode(value) } catch {
            throw StoreError(code: .invalid, message: "cannot encode a heartbeat value: \(error)")
        }
    }
}
