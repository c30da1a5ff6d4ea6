#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

extension Etcd {
    /// The header etcd puts on every answer.
    public struct ResponseHeader: Sendable, Hashable, Decodable {
        /// The cluster's id.
        public var clusterID: UInt64
        /// The id of the member that answered.
        public var memberID: UInt64
        /// The store's revision when the request was served.
        public var revision: Int64
        /// The raft term when the request was served.
        public var raftTerm: UInt64

        /// Makes a header (mostly for tests).
        public init(clusterID: UInt64 = 0, memberID: UInt64 = 0, revision: Int64 = 0, raftTerm: UInt64 = 0) {
            self.clusterID = clusterID
            self.memberID = memberID
            self.revision = revision
            self.raftTerm = raftTerm
        }

        enum CodingKeys: String, CodingKey {
            case clusterID = "cluster_id", memberID = "member_id", revision, raftTerm = "raft_term"
        }
        /// Decodes the gateway's JSON (int64s as strings, missing fields are zero).
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            clusterID = try c.wireUInt64(.clusterID)
            memberID = try c.wireUInt64(.memberID)
            revision = try c.wireInt64(.revision)
            raftTerm = try c.wireUInt64(.raftTerm)
        }
    }

    /// One key and its value, as etcd stores it.
    public struct KeyValue: Sendable, Hashable, Decodable {
        /// The key's bytes.
        public var key: Data
        /// The value's bytes (empty for `keysOnly` ranges and deletions).
        public var value: Data
        /// The revision that created the key (reset when a deleted key is created again).
        public var createRevision: Int64
        /// The revision of the last change.
        public var modRevision: Int64
        /// How many times the key was written since it was created (0 after a delete).
        public var version: Int64
        /// The lease the key is attached to, 0 when none.
        public var lease: Int64

        /// Makes a key-value (mostly for tests).
        public init(
            key: Data, value: Data = Data(), createRevision: Int64 = 0, modRevision: Int64 = 0,
            version: Int64 = 0, lease: Int64 = 0
        ) {
            self.key = key
            self.value = value
            self.createRevision = createRevision
            self.modRevision = modRevision
            self.version = version
            self.lease = lease
        }

        /// The key as UTF-8 text.
        public var keyString: String { String(decoding: key, as: UTF8.self) }
        /// The value as UTF-8 text.
        public var valueString: String { String(decoding: value, as: UTF8.self) }

        enum CodingKeys: String, CodingKey {
            case key, value, createRevision = "create_revision", modRevision = "mod_revision", version, lease
        }
        /// Decodes the gateway's JSON (base64 bytes, int64s as strings).
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            key = try c.decodeIfPresent(Data.self, forKey: .key) ?? Data()
            value = try c.decodeIfPresent(Data.self, forKey: .value) ?? Data()
            createRevision = try c.wireInt64(.createRevision)
            modRevision = try c.wireInt64(.modRevision)
            version = try c.wireInt64(.version)
            lease = try c.wireInt64(.lease)
        }
    }

    /// A key, a prefix, or a range of keys `[key, rangeEnd)`.
    public struct KeyRange: Sendable, Hashable {
        /// The first key.
        public var key: Data
        /// One past the last key; nil for a single key. `"\0"` means "every key ≥ `key`".
        public var rangeEnd: Data?

        /// Makes a range from raw bytes.
        public init(key: Data, rangeEnd: Data? = nil) {
            self.key = key
            self.rangeEnd = rangeEnd
        }

        /// Exactly one key.
        public static func key(_ key: String) -> KeyRange { KeyRange(key: Data(key.utf8)) }
        /// Exactly one key, as bytes.
        public static func key(_ key: Data) -> KeyRange { KeyRange(key: key) }
        /// Every key starting with `prefix`.
        public static func prefix(_ prefix: String) -> KeyRange { self.prefix(Data(prefix.utf8)) }
        /// Every key starting with `prefix`, as bytes.
        public static func prefix(_ prefix: Data) -> KeyRange {
            KeyRange(key: prefix, rangeEnd: Etcd.prefixEnd(prefix))
        }
        /// Keys in `[from, to)`.
        public static func range(from: String, to: String) -> KeyRange {
            KeyRange(key: Data(from.utf8), rangeEnd: Data(to.utf8))
        }
        /// Every key ≥ `from`.
        public static func from(_ from: String) -> KeyRange {
            KeyRange(key: Data(from.utf8), rangeEnd: Data([0]))
        }
    }

    /// The range end that selects every key starting with `prefix`: the prefix with its last
    /// byte below 0xff incremented (and following bytes dropped); `"\0"` (all keys) when none.
    public static func prefixEnd(_ prefix: Data) -> Data {
        var bytes = [UInt8](prefix)
        while let last = bytes.last {
            if last < 0xff {
                bytes[bytes.count - 1] = last + 1
                return Data(bytes)
            }
            bytes.removeLast()
        }
        return Data([0])
    }

    /// How a range sorts its keys.
    public enum SortOrder: String, Sendable {
        /// etcd's default order (by key, ascending).
        case none = "NONE"
        /// Ascending.
        case ascend = "ASCEND"
        /// Descending.
        case descend = "DESCEND"
    }

    /// What a range sorts by.
    public enum SortTarget: String, Sendable {
        /// The key.
        case key = "KEY"
        /// The version.
        case version = "VERSION"
        /// The create revision.
        case create = "CREATE"
        /// The mod revision.
        case mod = "MOD"
        /// The value.
        case value = "VALUE"
    }

    /// A read of one key or a range. Maps to the body of `POST /v3/kv/range`.
    public struct RangeRequest: Sendable, Hashable, Encodable {
        /// The keys to read.
        public var range: KeyRange
        /// Read at this revision (0: latest).
        public var revision: Int64
        /// At most this many keys (0: no limit).
        public var limit: Int64
        /// Return keys without values.
        public var keysOnly: Bool
        /// Return only the count.
        public var countOnly: Bool
        /// Sort order.
        public var sortOrder: SortOrder
        /// Sort key.
        public var sortTarget: SortTarget
        /// Serve from the member's local state without a quorum read.
        public var serializable: Bool
        /// Only keys last modified at this revision or later (0: any). etcd applies it after
        /// reading the range, so `limit` counts the keys left, while the answer's `count` is
        /// still every key in the range.
        public var minModRevision: Int64

        /// Makes a range request.
        public init(
            _ range: KeyRange, revision: Int64 = 0, limit: Int64 = 0, keysOnly: Bool = false,
            countOnly: Bool = false, sortOrder: SortOrder = .none, sortTarget: SortTarget = .key,
            serializable: Bool = false, minModRevision: Int64 = 0
        ) {
            self.range = range
            self.revision = revision
            self.limit = limit
            self.keysOnly = keysOnly
            self.countOnly = countOnly
            self.sortOrder = sortOrder
            self.sortTarget = sortTarget
            self.serializable = serializable
            self.minModRevision = minModRevision
        }

        enum CodingKeys: String, CodingKey {
            case key, rangeEnd = "range_end", revision, limit, keysOnly = "keys_only"
            case countOnly = "count_only", sortOrder = "sort_order", sortTarget = "sort_target"
            case serializable, minModRevision = "min_mod_revision"
        }
        /// Encodes the gateway's JSON.
        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(range.key, forKey: .key)
            try c.encodeIfPresent(range.rangeEnd, forKey: .rangeEnd)
            if revision != 0 { try c.encode(String(revision), forKey: .revision) }
            if limit != 0 { try c.encode(String(limit), forKey: .limit) }
            if keysOnly { try c.encode(true, forKey: .keysOnly) }
            if countOnly { try c.encode(true, forKey: .countOnly) }
            if sortOrder != .none { try c.encode(sortOrder.rawValue, forKey: .sortOrder) }
            if sortTarget != .key { try c.encode(sortTarget.rawValue, forKey: .sortTarget) }
            if serializable { try c.encode(true, forKey: .serializable) }
            if minModRevision != 0 { try c.encode(String(minModRevision), forKey: .minModRevision) }
        }
    }

    /// The answer to a range.
    public struct RangeResponse: Sendable, Hashable, Decodable {
        /// The header; `header.revision` is the revision the read saw.
        public var header: ResponseHeader
        /// The keys found.
        public var kvs: [KeyValue]
        /// Whether more keys matched than `limit` allowed.
        public var more: Bool
        /// How many keys matched in all.
        public var count: Int64

        enum CodingKeys: String, CodingKey { case header, kvs, more, count }
        /// Decodes the gateway's JSON.
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            header = try c.decodeIfPresent(ResponseHeader.self, forKey: .header) ?? ResponseHeader()
            kvs = try c.decodeIfPresent([KeyValue].self, forKey: .kvs) ?? []
            more = try c.decodeIfPresent(Bool.self, forKey: .more) ?? false
            count = try c.wireInt64(.count)
        }
    }

    /// A write of one key. Maps to the body of `POST /v3/kv/put`.
    public struct PutRequest: Sendable, Hashable, Encodable {
        /// The key.
        public var key: Data
        /// The value.
        public var value: Data
        /// The lease to attach the key to (0: none).
        public var lease: Int64
        /// Return the previous key-value.
        public var prevKV: Bool

        /// Makes a put request.
        public init(key: Data, value: Data, lease: Int64 = 0, prevKV: Bool = false) {
            self.key = key
            self.value = value
            self.lease = lease
            self.prevKV = prevKV
        }
        /// Makes a put request from text.
        public init(_ key: String, _ value: String, lease: Int64 = 0, prevKV: Bool = false) {
            self.init(key: Data(key.utf8), value: Data(value.utf8), lease: lease, prevKV: prevKV)
        }

        enum CodingKeys: String, CodingKey { case key, value, lease, prevKV = "prev_kv" }
        /// Encodes the gateway's JSON.
        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(key, forKey: .key)
            try c.encode(value, forKey: .value)
            if lease != 0 { try c.encode(String(lease), forKey: .lease) }
            if prevKV { try c.encode(true, forKey: .prevKV) }
        }
    }

    /// The answer to a put.
    public struct PutResponse: Sendable, Hashable, Decodable {
        /// The header; `header.revision` is the revision of the write.
        public var header: ResponseHeader
        /// The previous key-value, when asked for and present.
        public var prevKV: KeyValue?

        enum CodingKeys: String, CodingKey { case header, prevKV = "prev_kv" }
        /// Decodes the gateway's JSON.
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            header = try c.decodeIfPresent(ResponseHeader.self, forKey: .header) ?? ResponseHeader()
            prevKV = try c.decodeIfPresent(KeyValue.self, forKey: .prevKV)
        }
    }

    /// A deletion of one key or a range. Maps to the body of `POST /v3/kv/deleterange`.
    public struct DeleteRangeRequest: Sendable, Hashable, Encodable {
        /// The keys to delete.
        public var range: KeyRange
        /// Return the deleted key-values.
        public var prevKV: Bool

        /// Makes a delete request.
        public init(_ range: KeyRange, prevKV: Bool = false) {
            self.range = range
            self.prevKV = prevKV
        }

        enum CodingKeys: String, CodingKey { case key, rangeEnd = "range_end", prevKV = "prev_kv" }
        /// Encodes the gateway's JSON.
        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(range.key, forKey: .key)
            try c.encodeIfPresent(range.rangeEnd, forKey: .rangeEnd)
            if prevKV { try c.encode(true, forKey: .prevKV) }
        }
    }

    /// The answer to a delete.
    public struct DeleteRangeResponse: Sendable, Hashable, Decodable {
        /// The header.
        public var header: ResponseHeader
        /// How many keys were deleted.
        public var deleted: Int64
        /// The deleted key-values, when asked for.
        public var prevKVs: [KeyValue]

        enum CodingKeys: String, CodingKey { case header, deleted, prevKVs = "prev_kvs" }
        /// Decodes the gateway's JSON.
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            header = try c.decodeIfPresent(ResponseHeader.self, forKey: .header) ?? ResponseHeader()
            deleted = try c.wireInt64(.deleted)
            prevKVs = try c.decodeIfPresent([KeyValue].self, forKey: .prevKVs) ?? []
        }
    }

    /// One condition of a transaction.
    public struct Compare: Sendable, Hashable, Encodable {
        /// How the key's field is compared with the operand.
        public enum Result: String, Sendable {
            /// `==`
            case equal = "EQUAL"
            /// `>`
            case greater = "GREATER"
            /// `<`
            case less = "LESS"
            /// `!=`
            case notEqual = "NOT_EQUAL"
        }
        /// Which field is compared, with the operand.
        public enum Target: Sendable, Hashable {
            /// The key's version (0: the key does not exist).
            case version(Int64)
            /// The key's create revision (0: the key does not exist).
            case createRevision(Int64)
            /// The key's mod revision.
            case modRevision(Int64)
            /// The key's value.
            case value(Data)
            /// The key's lease.
            case lease(Int64)
        }

        /// The key (or first key of a range).
        public var range: KeyRange
        /// The comparison.
        public var result: Result
        /// The field and operand.
        public var target: Target

        /// Makes a comparison.
        public init(_ range: KeyRange, _ result: Result, _ target: Target) {
            self.range = range
            self.result = result
            self.target = target
        }

        /// `version(key) <op> value`.
        public static func version(_ key: String, _ result: Result, _ value: Int64) -> Compare {
            Compare(.key(key), result, .version(value))
        }
        /// `create_revision(key) <op> value`; `createRevision(k, .equal, 0)` means "k does not exist".
        public static func createRevision(_ key: String, _ result: Result, _ value: Int64) -> Compare {
            Compare(.key(key), result, .createRevision(value))
        }
        /// `mod_revision(key) <op> value`.
        public static func modRevision(_ key: String, _ result: Result, _ value: Int64) -> Compare {
            Compare(.key(key), result, .modRevision(value))
        }
        /// `value(key) <op> value`.
        public static func value(_ key: String, _ result: Result, _ value: String) -> Compare {
            Compare(.key(key), result, .value(Data(value.utf8)))
        }
        /// `lease(key) <op> value`.
        public static func lease(_ key: String, _ result: Result, _ value: Int64) -> Compare {
            Compare(.key(key), result, .lease(value))
        }

        enum CodingKeys: String, CodingKey {
            case key, rangeEnd = "range_end", result, target, version
            case createRevision = "create_revision", modRevision = "mod_revision", value, lease
        }
        /// Encodes the gateway's JSON.
        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(range.key, forKey: .key)
            try c.encodeIfPresent(range.rangeEnd, forKey: .rangeEnd)
            try c.encode(result.rawValue, forKey: .result)
            switch target {
            case .version(let v):
                try c.encode("VERSION", forKey: .target)
                try c.encode(String(v), forKey: .version)
            case .createRevision(let v):
                try c.encode("CREATE", forKey: .target)
                try c.encode(String(v), forKey: .createRevision)
            case .modRevision(let v):
                try c.encode("MOD", forKey: .target)
                try c.encode(String(v), forKey: .modRevision)
            case .value(let v):
                try c.encode("VALUE", forKey: .target)
                try c.encode(v, forKey: .value)
            case .lease(let v):
                try c.encode("LEASE", forKey: .target)
                try c.encode(String(v), forKey: .lease)
            }
        }
    }

    /// One operation inside a transaction.
    public enum RequestOp: Sendable, Hashable, Encodable {
        /// A read.
        case range(RangeRequest)
        /// A write.
        case put(PutRequest)
        /// A deletion.
        case deleteRange(DeleteRangeRequest)
        /// A nested transaction (etcd 3.3 and later): its compares are evaluated against the
        /// state before the outer transaction, and it succeeds or fails on its own.
        indirect case txn(TxnRequest)

        enum CodingKeys: String, CodingKey {
            case range = "request_range", put = "request_put", deleteRange = "request_delete_range", txn = "request_txn"
        }
        /// Encodes the gateway's JSON.
        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            switch self {
            case .range(let r): try c.encode(r, forKey: .range)
            case .put(let r): try c.encode(r, forKey: .put)
            case .deleteRange(let r): try c.encode(r, forKey: .deleteRange)
            case .txn(let r): try c.encode(r, forKey: .txn)
            }
        }
    }

    /// The answer to one operation of a transaction, in the order of the operations.
    public enum ResponseOp: Sendable, Hashable, Decodable {
        /// The answer to a read.
        case range(RangeResponse)
        /// The answer to a write.
        case put(PutResponse)
        /// The answer to a deletion.
        case deleteRange(DeleteRangeResponse)
        /// The answer to a nested transaction (its header is empty: the outer one's counts).
        indirect case txn(TxnResponse)

        enum CodingKeys: String, CodingKey {
            case range = "response_range", put = "response_put", deleteRange = "response_delete_range", txn = "response_txn"
        }
        /// Decodes the gateway's JSON.
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            if let r = try c.decodeIfPresent(RangeResponse.self, forKey: .range) {
                self = .range(r)
            } else if let r = try c.decodeIfPresent(PutResponse.self, forKey: .put) {
                self = .put(r)
            } else if let r = try c.decodeIfPresent(DeleteRangeResponse.self, forKey: .deleteRange) {
                self = .deleteRange(r)
            } else if let r = try c.decodeIfPresent(TxnResponse.self, forKey: .txn) {
                self = .txn(r)
            } else {
                throw DecodingError.dataCorrupted(
                    .init(codingPath: decoder.codingPath, debugDescription: "unknown response op"))
            }
        }

        /// The read's answer, when this is one.
        public var rangeResponse: RangeResponse? {
            if case .range(let r) = self { return r }
            return nil
        }

        /// The nested transaction's answer, when this is one.
        public var txnResponse: TxnResponse? {
            if case .txn(let r) = self { return r }
            return nil
        }
    }

    /// A transaction: if every compare holds, run `success`, else `failure`, atomically.
    /// Maps to the body of `POST /v3/kv/txn`.
    public struct TxnRequest: Sendable, Hashable, Encodable {
        /// The conditions, all of which must hold.
        public var compare: [Compare]
        /// What runs when they hold.
        public var success: [RequestOp]
        /// What runs when one does not.
        public var failure: [RequestOp]

        /// Makes a transaction.
        public init(compare: [Compare] = [], success: [RequestOp] = [], failure: [RequestOp] = []) {
            self.compare = compare
            self.success = success
            self.failure = failure
        }
    }

    /// The answer to a transaction.
    public struct TxnResponse: Sendable, Hashable, Decodable {
        /// The header; `header.revision` is the revision after the transaction.
        public var header: ResponseHeader
        /// Whether every compare held (and `success` ran).
        public var succeeded: Bool
        /// The answers of the operations that ran.
        public var responses: [ResponseOp]

        /// Makes an answer (e.g. one transaction's share of a batch's answer).
        public init(header: ResponseHeader, succeeded: Bool, responses: [ResponseOp]) {
            self.header = header
            self.succeeded = succeeded
            self.responses = responses
        }

        enum CodingKeys: String, CodingKey { case header, succeeded, responses }
        /// Decodes the gateway's JSON.
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            header = try c.decodeIfPresent(ResponseHeader.self, forKey: .header) ?? ResponseHeader()
            succeeded = try c.decodeIfPresent(Bool.self, forKey: .succeeded) ?? false
            responses = try c.decodeIfPresent([ResponseOp].self, forKey: .responses) ?? []
        }
    }
}

/// Answers that carry nothing but a header.
struct HeaderOnlyResponse: Decodable {
    var header: Etcd.ResponseHeader
    enum CodingKeys: String, CodingKey { case header }
    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        header = try c.decodeIfPresent(Etcd.ResponseHeader.self, forKey: .header) ?? Etcd.ResponseHeader()
    }
}

/// The gateway writes int64/uint64 as JSON strings and leaves out zero values.
extension KeyedDecodingContainer {
    func wireInt64(_ key: Key) throws -> Int64 {
        guard contains(key), try !decodeNil(forKey: key) else { return 0 }
        if let s = try? decode(String.self, forKey: key) {
            guard let v = Int64(s) else {
                throw DecodingError.dataCorruptedError(forKey: key, in: self, debugDescription: "not an int64: \(s)")
            }
            return v
        }
        return try decode(Int64.self, forKey: key)
    }

    func wireUInt64(_ key: Key) throws -> UInt64 {
        guard contains(key), try !decodeNil(forKey: key) else { return 0 }
        if let s = try? decode(String.self, forKey: key) {
            guard let v = UInt64(s) else {
                throw DecodingError.dataCorruptedError(forKey: key, in: self, debugDescription: "not a uint64: \(s)")
            }
            return v
        }
        return try decode(UInt64.self, forKey: key)
    }
}
