import EtcdClient
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import StreamingJSON

/// Objects of one kind and the etcd revision they were read at.
public struct ResourceList<R: Resource>: Sendable {
    /// The objects, ordered by key (tenant, then name).
    public var items: [R]
    /// The store's revision the list was read at: watch from `revision + 1` to miss nothing.
    public var revision: Int64
}

/// Typed resources in etcd under `/gpuplane/<kind>/<tenant>/<name>`, with optimistic
/// concurrency: every object carries `metadata.resourceVersion` = its etcd mod revision, and
/// every write compares it, so a stale writer gets ``StoreError/Code/conflict``, never an overwrite.
///
/// Every method throws ``StoreError``.
public final class ResourceStore: Sendable {
    /// The etcd client underneath.
    public let client: Etcd.Client
    /// Page size of lists.
    public let pageSize: Int64
    /// Group commit of concurrent transactions (see ``WriteBatcher``); nil writes each alone.
    let batcher: WriteBatcher?

    /// Makes a store over `client`.
    ///
    /// - Parameter batchWrites: whether transactions that arrive while others are in flight go
    ///   to etcd together, as nested transactions of one request (each still all-or-nothing on
    ///   its own). Needs etcd 3.3 or later.
    public init(client: Etcd.Client, pageSize: Int64 = 1000, batchWrites: Bool = true) {
        self.client = client
        self.pageSize = pageSize
        self.batcher = batchWrites ? WriteBatcher(client: client) : nil
    }

    /// Stores a new object. Sets `uid` (when empty) and `created` (when nil); the returned
    /// object carries the new `resourceVersion`.
    /// - Throws: ``StoreError/Code/alreadyExists`` when an object of that kind, tenant and name exists.
    public func create<R: Resource>(_ object: R) async throws -> R {
        var txn = StoreTransaction()
        let handle = try txn.create(object)
        return try await commit(txn).object(handle)
    }

    /// Reads one object.
    ///
    /// - Parameter serializable: read the etcd member's applied state as it stands, without the
    ///   wait of a linearizable read for the member to apply everything committed first: much
    ///   faster while etcd is busy writing, but possibly older than a write already acknowledged.
    /// - Throws: ``StoreError/Code/notFound``.
    public func get<R: Resource>(_ type: R.Type, tenant: String, name: String, serializable: Bool = false) async throws -> R {
        let key = R.storageKey(tenant: tenant, name: name)
        let kv: Etcd.KeyValue?
        do {
            kv = try await client.range(.key(key), serializable: serializable).kvs.first
        } catch let e as EtcdError {
            throw StoreError.etcd(e)
        }
        guard let kv else { throw StoreError.notFound(R.kind, key: key) }
        return try Self.decode(R.self, kv)
    }

    /// Which of `objects` exist in the store now (by kind, tenant and name; their versions
    /// are not compared), as storage keys, read at one revision in one read-only transaction.
    /// Give at most as many as etcd allows operations in one transaction (`--max-txn-ops`).
    /// - Throws: ``StoreError/Code/unavailable``.
    public func existingKeys<R: Resource>(of objects: [R]) async throws -> Set<String> {
        guard !objects.isEmpty else { return [] }
        let reads: [Etcd.RequestOp] = objects.map { .range(Etcd.RangeRequest(.key($0.storageKey), keysOnly: true)) }
        do {
            let answer = try await client.txn(compare: [], success: reads)
            return Set(answer.responses.compactMap { $0.rangeResponse?.kvs.first?.keyString })
        } catch let e as EtcdError {
            throw StoreError.etcd(e)
        }
    }

    /// Lists the objects of one kind, of one tenant or (nil) of all, at one revision.
    ///
    /// With a tenant, `namePrefix` narrows the list to names starting with it (e.g. the replicas
    /// `web.` of application `web`) with one range read. A cache keeping the objects passes its
    /// `strings` table (``StringTable``).
    public func list<R: Resource>(
        _ type: R.Type, tenant: String? = nil, namePrefix: String = "", strings: StringTable? = nil
    ) async throws -> ResourceList<R> {
        let prefix = R.storagePrefix(tenant: tenant) + (tenant == nil ? "" : namePrefix)
        let end = Etcd.prefixEnd(Data(prefix.utf8))
        var from = Data(prefix.utf8)
        var revision: Int64 = 0
        var items: [R] = []
        do {
            while true {
                let page = try await client.range(
                    Etcd.RangeRequest(Etcd.KeyRange(key: from, rangeEnd: end), revision: revision, limit: pageSize))
                if revision == 0 { revision = page.header.revision }
                for kv in page.kvs { items.append(try Self.decode(R.self, kv, strings: strings)) }
                guard page.more, let last = page.kvs.last else { break }
                from = last.key + Data([0])
            }
        } catch let e as EtcdError {
            throw StoreError.etcd(e)
        }
        return ResourceList(items: items, revision: revision)
    }

    /// Replaces an object, if it is still at `object.metadata.resourceVersion`. Keeps the
    /// stored `uid` and `created` when the object leaves them empty.
    /// - Throws: ``StoreError/Code/conflict`` (with the current version) when it changed,
    ///   ``StoreError/Code/notFound`` when it is gone, ``StoreError/Code/invalid`` without a version.
    public func update<R: Resource>(_ object: R) async throws -> R {
        var object = object
        if object.metadata.uid.isEmpty || object.metadata.created == nil {
            let current = try await get(R.self, tenant: object.metadata.tenant, name: object.metadata.name)
            if object.metadata.uid.isEmpty { object.metadata.uid = current.metadata.uid }
            if object.metadata.created == nil { object.metadata.created = current.metadata.created }
        }
        var txn = StoreTransaction()
        let handle = try txn.update(object)
        return try await commit(txn).object(handle)
    }

    /// Reads an object, applies `change` and writes it back with compare-and-swap on the version
    /// it read; when another writer got in between, it reads again and retries, up to
    /// `attempts` times. `change` may throw to abort; its error passes through.
    ///
    /// The first read is serializable (``get(_:tenant:name:serializable:)``): under write load
    /// most of a linearizable read's time is its wait for etcd's apply loop (1.6 s on average
    /// for the replicas' status reports in a saturated fleet run). Any doubt that answer leaves
    /// (the object missing, `change` refusing it, or the write meeting a newer version) is
    /// settled by the attempts that follow, each on a linearizable read as before; so `change`
    /// may run on a stale object, and must only decide and mutate.
    ///
    /// `deadline`: the instant after which the caller no longer wants the change (its client
    /// stopped waiting for the answer): past it, no further read or write is sent.
    /// - Throws: ``StoreError/Code/notFound``; ``StoreError/Code/conflict`` when every attempt
    ///   met a newer version; ``StoreError/Code/deadlineExceeded`` past `deadline`, before the
    ///   write.
    public func modify<R: Resource>(
        _ type: R.Type, tenant: String, name: String, attempts: Int = 5, before deadline: ContinuousClock.Instant? = nil,
        _ change: (inout R) throws -> Void
    ) async throws -> R {
        try await modify(R.self, tenant: tenant, name: name, attempts: attempts, unchanged: nil, deadline: deadline, change)
    }

    /// ``modify(_:tenant:name:attempts:before:_:)`` that writes nothing when `change` leaves the
    /// object as a linearizable read found it, and returns it as read: a report sent again (a
    /// retry whose first copy landed, an agent restarted) costs a read rather than an etcd write
    /// and a change delivered to every watcher. One found unchanged on the first, serializable
    /// read is read again linearizably first: a lagging member's copy may already look like
    /// the change while the store's does not.
    public func modifyIfChanged<R: Resource & Equatable>(
        _ type: R.Type, tenant: String, name: String, attempts: Int = 5, before deadline: ContinuousClock.Instant? = nil,
        _ change: (inout R) throws -> Void
    ) async throws -> R {
        try await modify(R.self, tenant: tenant, name: name, attempts: attempts, unchanged: { $0 == $1 }, deadline: deadline, change)
    }

    private func modify<R: Resource>(
        _ type: R.Type, tenant: String, name: String, attempts: Int, unchanged: ((R, R) -> Bool)?, deadline: ContinuousClock.Instant?,
        _ change: (inout R) throws -> Void
    ) async throws -> R {
        // Past the caller's deadline nothing more goes to etcd: its client stopped waiting.
        func inTime() throws {
            if let deadline, ContinuousClock.now >= deadline {
                throw StoreError.deadlineExceeded(R.kind, key: R.storageKey(tenant: tenant, name: name))
            }
        }
        try inTime()
        if let read = try await optimisticRead(R.self, tenant: tenant, name: name) {
            var object = read
            if (try? change(&object)) != nil, unchanged?(read, object) != true {
                try inTime()
                do {
                    let written = try await update(object)
                    ModifyMetrics.modifies(.serializable).increment()
                    return written
                } catch let error as StoreError where error.code == .conflict {
                    // Read behind the store, or another writer got in: read again, linearizably.
                }
            }
        }
        ModifyMetrics.modifies(.linearizable).increment()
        var attempt = 0
        while true {
            attempt += 1
            try inTime()
            let read = try await get(R.self, tenant: tenant, name: name)
            var object = read
            try change(&object)
            if unchanged?(read, object) == true {
                ModifyMetrics.modifies(.unchanged).increment()
                return read
            }
            try inTime()
            do {
                return try await update(object)
            } catch let error as StoreError where error.code == .conflict && attempt < attempts {
                continue
            }
        }
    }

    /// ``modify(_:tenant:name:attempts:before:_:)``'s first read: serializable, nil when the object is
    /// not there (the member may not have applied its creation yet).
    private func optimisticRead<R: Resource>(_ type: R.Type, tenant: String, name: String) async throws -> R? {
        do {
            return try await get(R.self, tenant: tenant, name: name, serializable: true)
        } catch let error as StoreError where error.code == .notFound {
            return nil
        }
    }

    /// Deletes an object, only if it is at `expectedVersion` when one is given.
    /// - Throws: ``StoreError/Code/notFound``; ``StoreError/Code/conflict`` on a version mismatch.
    public func delete<R: Resource>(_ type: R.Type, tenant: String, name: String, expectedVersion: String? = nil)
        async throws
    {
        var txn = StoreTransaction()
        txn.delete(R.self, tenant: tenant, name: name, expectedVersion: expectedVersion)
        _ = try await commit(txn)
    }

    /// Builds and commits a multi-object transaction: all of it, or nothing.
    ///
    /// ```swift
    /// let result = try await store.transaction { txn in
    ///     txn.require(leader.fence, reason: "scheduler leadership")
    ///     let app = try txn.create(application)
    ///     try txn.update(replica)
    ///     return app
    /// }
    /// ```
    public func transaction<T>(_ build: (inout StoreTransaction) throws -> T) async throws -> (T, TransactionResult) {
        var txn = StoreTransaction()
        let value = try build(&txn)
        return (value, try await commit(txn))
    }

    /// Commits a transaction built with ``StoreTransaction``.
    /// - Throws: the failure of the first operation or condition that did not hold:
    ///   ``StoreError/Code/alreadyExists``, ``StoreError/Code/notFound``,
    ///   ``StoreError/Code/conflict`` or ``StoreError/Code/preconditionFailed``, with
    ///   ``StoreError/failedIndex``.
    public func commit(_ txn: StoreTransaction) async throws -> TransactionResult {
        var compares: [Etcd.Compare] = []
        var success: [Etcd.RequestOp] = []
        for op in txn.operations {
            compares.append(op.compare)
            success.append(op.write)
        }
        for condition in txn.conditions { compares.append(condition.compare) }
        for marker in txn.markers { success.append(.put(Etcd.PutRequest(key: marker.key, value: marker.value))) }
        let answer: Etcd.TxnResponse
        do {
            let request = Etcd.TxnRequest(compare: compares, success: success)
            let reads = txn.conditions.map(\.compare.range)
            if let batcher, reads.allSatisfy({ $0.rangeEnd == nil }) {
                let bytes = txn.operations.reduce(0) { total, op in
                    if case .put(let put) = op.write { return total + op.key.count + put.value.count }
                    return total + op.key.count
                }
                answer = try await batcher.submit(
                    request, writes: Set(txn.operations.map(\.key) + txn.markers.map(\.key)), reads: Set(reads.map(\.key)),
                    bytes: bytes + txn.markers.reduce(0) { $0 + $1.key.count + $1.value.count })
            } else {
                answer = try await client.txn(request)
            }
        } catch let e as EtcdError {
            throw StoreError.etcd(e)
        }
        if answer.succeeded {
            return TransactionResult(revision: answer.header.revision, objects: txn.operations.map(\.object))
        }
        // Find the first condition that does not hold. The write carries no failure branch (etcd
        // logs the whole request in raft, so reads there cost every write); the rare failure reads
        // the keys afterwards, in one read-only txn at one revision.
        var failure: [Etcd.RequestOp] = txn.operations.map { .range(Etcd.RangeRequest(.key($0.key), keysOnly: true)) }
        failure += txn.conditions.map { .range(Etcd.RangeRequest($0.compare.range)) }
        let reads: [[Etcd.KeyValue]]
        do {
            reads = try await client.txn(compare: [], success: failure).responses.map { $0.rangeResponse?.kvs ?? [] }
        } catch let e as EtcdError {
            throw StoreError.etcd(e)
        }
        for (i, op) in txn.operations.enumerated() {
            let kv = i < reads.count ? reads[i].first : nil
            if Self.holds(op.compare, kv) { continue }
            let key = String(decoding: op.key, as: UTF8.self)
            var error: StoreError
            switch op.expectation {
            case .absent: error = .alreadyExists(op.kind, key: key)
            case .present: error = .notFound(op.kind, key: key)
            case .version:
                error = kv.map { .conflict(String($0.modRevision), kind: op.kind, key: key) } ?? .notFound(op.kind, key: key)
            }
            error.failedIndex = i
            throw error
        }
        for (j, condition) in txn.conditions.enumerated() {
            let index = txn.operations.count + j
            let kvs = index < reads.count ? reads[index] : []
            // A condition on a range holds when it holds for every key there (for none: as
            // for a missing key), as etcd decides it.
            if kvs.isEmpty ? Self.holds(condition.compare, nil) : kvs.allSatisfy({ Self.holds(condition.compare, $0) }) { continue }
            var error = StoreError(code: .preconditionFailed, message: "condition failed: \(condition.reason)")
            error.key = String(decoding: condition.compare.range.key, as: UTF8.self)
            error.failedIndex = j
            error.failedCondition = condition.reason
            error.failedConditionTag = condition.tag
            throw error
        }
        // Every condition holds now: something changed between the txn and our reading of it.
        var error = StoreError(code: .conflict, message: "transaction conditions changed while it ran; retry")
        error.failedIndex = nil
        throw error
    }

    /// Whether `compare` holds for `kv` (nil: the key does not exist, all its fields are zero).
    static func holds(_ compare: Etcd.Compare, _ kv: Etcd.KeyValue?) -> Bool {
        func check<T: Comparable>(_ actual: T, _ operand: T) -> Bool {
            switch compare.result {
            case .equal: return actual == operand
            case .notEqual: return actual != operand
            case .greater: return actual > operand
            case .less: return actual < operand
            }
        }
        switch compare.target {
        case .version(let v): return check(kv?.version ?? 0, v)
        case .createRevision(let v): return check(kv?.createRevision ?? 0, v)
        case .modRevision(let v): return check(kv?.modRevision ?? 0, v)
        case .lease(let v): return check(kv?.lease ?? 0, v)
        case .value(let v):
            // etcd: a value compare on a missing key always fails.
            guard let kv else { return false }
            let order = kv.value == v ? 0 : ([UInt8](kv.value).lexicographicallyPrecedes([UInt8](v)) ? -1 : 1)
            return check(order, 0)
        }
    }

    /// Decodes a stored object from its key-value, setting resourceVersion from its mod revision;
    /// a cache that keeps the object passes its `strings` table (``StringTable``).
    public static func decode<R: Resource>(_ type: R.Type, _ kv: Etcd.KeyValue, strings: StringTable? = nil) throws -> R {
        do {
            var object = try GPUPlaneJSON.decode(R.self, from: kv.value, strings: strings)
            object.metadata.resourceVersion = String(kv.modRevision)
            return object
        } catch {
            throw StoreError(code: .corrupt, message: "cannot decode \(kv.keyString): \(error)", kind: R.kind, key: kv.keyString)
        }
    }

    /// Encodes an object for storage, without its resourceVersion (etcd keeps that).
    static func encode<R: Resource>(_ object: R) throws -> Data {
        var stored = object
        stored.metadata.resourceVersion = ""
        do {
            return try GPUPlaneJSON.encode(stored)
        } catch {
            throw StoreError(code: .invalid, message: "cannot encode \(object.storageKey): \(error)", kind: R.kind)
        }
    }
}

/// The outcome of a committed transaction.
public struct TransactionResult: Sendable {
    /// The revision of the transaction: the new resourceVersion of every object it wrote.
    public let revision: Int64
    let objects: [(any Resource)?]

    /// The stored form of an object created or updated in the transaction, with its new
    /// resourceVersion (and uid and created, for creates).
    public func object<R: Resource>(_ handle: StoreTransaction.Handle<R>) throws -> R {
        guard handle.index < objects.count, var object = objects[handle.index] as? R else {
            throw StoreError(code: .invalid, message: "handle from another transaction")
        }
        object.metadata.resourceVersion = String(revision)
        return object
    }
}

/// A multi-object transaction under construction: creates, updates and deletes over resources
/// of any kinds, plus extra raw conditions (such as a leader key's fence). Commit it with
/// ``ResourceStore/commit(_:)`` or build it inside ``ResourceStore/transaction(_:)``.
public struct StoreTransaction: Sendable {
    /// Refers to an object written by the transaction, to read its stored form from the result.
    public struct Handle<R: Resource>: Sendable {
        let index: Int
    }

    enum Expectation: Sendable {
        case absent, present, version
    }

    struct Operation: Sendable {
        var kind: ResourceKind
        var key: Data
        var compare: Etcd.Compare
        var write: Etcd.RequestOp
        var expectation: Expectation
        var object: (any Resource)?
    }

    struct Condition: Sendable {
        var compare: Etcd.Compare
        var reason: String
        var tag: ConditionTag?
    }

    /// A raw key the transaction writes besides its objects.
    struct RawWrite: Sendable {
        var key: Data
        var value: Data
    }

    /// Names an extra condition so that code can tell which one failed: a failure carries it as
    /// ``StoreError/failedConditionTag``. Decide by the tag, never by the reason's text (that is
    /// for people). Callers declare their tags as constants:
    ///
    /// ```swift
    /// extension StoreTransaction.ConditionTag {
    ///     static let leaderFence = Self("scheduler.leader-fence")
    /// }
    /// ```
    public struct ConditionTag: Hashable, Sendable, CustomStringConvertible {
        /// A short, stable name, safe as a metric label.
        public let name: String

        /// A tag named `name`; give each condition that is told apart its own name.
        public init(_ name: String) { self.name = name }

        public var description: String { name }
    }

    var operations: [Operation] = []
    var conditions: [Condition] = []
    /// Raw keys the transaction writes besides its objects (``bump(_:unchangedSince:reason:tag:)``,
    /// ``set(_:to:ifModRevision:reason:tag:)``).
    var markers: [RawWrite] = []

    /// Makes an empty transaction.
    public init() {}

    /// Whether nothing was added.
    public var isEmpty: Bool { operations.isEmpty && conditions.isEmpty }

    /// Adds a create: fails the transaction with ``StoreError/Code/alreadyExists`` if the object
    /// exists. Sets `uid` (when empty) and `created` (when nil). With a `lease`, etcd deletes the
    /// object when that lease expires (e.g. events; 0 is none).
    @discardableResult
    public mutating func create<R: Resource>(_ object: R, lease: Int64 = 0) throws -> Handle<R> {
        var object = object
        if object.metadata.uid.isEmpty { object.metadata.uid = ObjectMeta.newUID() }
        if object.metadata.created == nil { object.metadata.created = Self.now() }
        let key = Data(object.storageKey.utf8)
        let value = try ResourceStore.encode(object)
        operations.append(
            Operation(
                kind: R.kind, key: key, compare: Etcd.Compare(.key(key), .equal, .createRevision(0)),
                write: .put(Etcd.PutRequest(key: key, value: value, lease: lease)), expectation: .absent, object: object))
        return Handle(index: operations.count - 1)
    }

    /// Adds an update: fails the transaction with ``StoreError/Code/conflict`` unless the
    /// object is still at `object.metadata.resourceVersion`. The object is put under `lease`
    /// (0: none), replacing any lease it had.
    @discardableResult
    public mutating func update<R: Resource>(_ object: R, lease: Int64 = 0) throws -> Handle<R> {
        let version = object.metadata.revision
        guard version > 0 else {
            throw StoreError(
                code: .invalid, message: "update of \(object.storageKey) without a resourceVersion", kind: R.kind,
                key: object.storageKey)
        }
        let key = Data(object.storageKey.utf8)
        let value = try ResourceStore.encode(object)
        operations.append(
            Operation(
                kind: R.kind, key: key, compare: Etcd.Compare(.key(key), .equal, .modRevision(version)),
                write: .put(Etcd.PutRequest(key: key, value: value, lease: lease)), expectation: .version, object: object))
        return Handle(index: operations.count - 1)
    }

    /// Adds a delete: fails the transaction with ``StoreError/Code/notFound`` when the object
    /// does not exist, or ``StoreError/Code/conflict`` when it is not at `expectedVersion`.
    public mutating func delete<R: Resource>(
        _ type: R.Type, tenant: String, name: String, expectedVersion: String? = nil
    ) {
        let key = Data(R.storageKey(tenant: tenant, name: name).utf8)
        let compare: Etcd.Compare
        let expectation: Expectation
        if let expectedVersion, let v = Int64(expectedVersion), v > 0 {
            compare = Etcd.Compare(.key(key), .equal, .modRevision(v))
            expectation = .version
        } else {
            compare = Etcd.Compare(.key(key), .greater, .createRevision(0))
            expectation = .present
        }
        operations.append(
            Operation(
                kind: R.kind, key: key, compare: compare,
                write: .deleteRange(Etcd.DeleteRangeRequest(.key(key))), expectation: expectation, object: nil))
    }

    /// Adds a raw condition, such as `leader.fence`; when it does not hold, the transaction
    /// fails with ``StoreError/Code/preconditionFailed``, `failedCondition = reason` and
    /// `failedConditionTag = tag`.
    public mutating func require(_ compare: Etcd.Compare, reason: String, tag: ConditionTag? = nil) {
        conditions.append(Condition(compare: compare, reason: reason, tag: tag))
    }

    /// Serializes writers that decide on one read: the transaction holds only if `key` was not
    /// written after `revision` (the revision the decision read at), and writes `key` itself,
    /// so of two such transactions deciding on the same read only the first commits. The other
    /// fails with ``StoreError/Code/preconditionFailed``, `failedCondition = reason` and
    /// `failedConditionTag = tag`, and should read again and decide again.
    public mutating func bump(_ key: String, unchangedSince revision: Int64, reason: String, tag: ConditionTag? = nil) {
        let data = Data(key.utf8)
        conditions.append(
            Condition(compare: Etcd.Compare(.key(data), .less, .modRevision(revision + 1)), reason: reason, tag: tag))
        markers.append(RawWrite(key: data, value: Data()))
    }

    /// Holds only if no key under `prefix` was written after `revision` (the revision a
    /// decision read at): every key there that exists is last written at or before it. A key
    /// deleted since is not seen (etcd compares the keys that exist), so pair it with deletes
    /// of what was read, which fail when their object is gone. Otherwise the transaction fails
    /// with ``StoreError/Code/preconditionFailed``, `failedCondition = reason` and
    /// `failedConditionTag = tag`.
    ///
    /// A transaction with such a condition is committed alone, never batched with others.
    public mutating func requireUnchanged(under prefix: String, since revision: Int64, reason: String, tag: ConditionTag? = nil) {
        conditions.append(
            Condition(compare: Etcd.Compare(.prefix(prefix), .less, .modRevision(revision + 1)), reason: reason, tag: tag))
    }

    /// Compare-and-swaps a raw key that is not an object (a cursor, a counter): the
    /// transaction holds only if `key`'s mod revision is still `revision` (0: the key does not
    /// exist), and then writes `value` there. Otherwise it fails with
    /// ``StoreError/Code/preconditionFailed``, `failedCondition = reason` and
    /// `failedConditionTag = tag`. The key's new mod revision is ``TransactionResult/revision``.
    public mutating func set(_ key: String, to value: Data, ifModRevision revision: Int64, reason: String, tag: ConditionTag? = nil) {
        let data = Data(key.utf8)
        conditions.append(Condition(compare: Etcd.Compare(.key(data), .equal, .modRevision(revision)), reason: reason, tag: tag))
        markers.append(RawWrite(key: data, value: value))
    }

    /// Now, to whole seconds: what the ISO-8601 encoding keeps, so a created object equals
    /// the same object read back.
    static func now() -> Date {
        Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down))
    }
}
