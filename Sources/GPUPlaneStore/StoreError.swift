import EtcdClient
import GPUPlaneCore

/// The one error type of the resource store. Decide by ``code``, never by ``message``.
public struct StoreError: Error, Sendable, CustomStringConvertible {
    /// What went wrong.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: String, Sendable {
            case alreadyExists, notFound, conflict, preconditionFailed, invalid, corrupt, unavailable, compacted, deadlineExceeded
        }
        private let value: Value
        private init(_ value: Value) { self.value = value }

        /// A create found the object already there.
        public static let alreadyExists = Code(.alreadyExists)
        /// The object does not exist.
        public static let notFound = Code(.notFound)
        /// The object changed since the version the caller had; see ``StoreError/currentVersion``.
        public static let conflict = Code(.conflict)
        /// An extra condition of a transaction (e.g. a leader fence) did not hold.
        public static let preconditionFailed = Code(.preconditionFailed)
        /// The request cannot be served as given (e.g. an update without a resourceVersion).
        public static let invalid = Code(.invalid)
        /// A stored value could not be decoded as its kind.
        public static let corrupt = Code(.corrupt)
        /// etcd failed; see ``StoreError/etcd``.
        public static let unavailable = Code(.unavailable)
        /// A watch asked for changes from a revision etcd has compacted away: list again and
        /// watch from the list's revision.
        public static let compacted = Code(.compacted)
        /// The caller's deadline passed before the next step to etcd: nothing more was read or
        /// written (``ResourceStore/modify(_:tenant:name:attempts:before:_:)``).
        public static let deadlineExceeded = Code(.deadlineExceeded)

        /// A short, stable name, safe as a metric label.
        public var description: String { value.rawValue }
    }

    /// What went wrong.
    public let code: Code
    /// For logs only.
    public let message: String
    /// The kind of the object concerned, when one is.
    public var kind: ResourceKind?
    /// The etcd key concerned, when one is.
    public var key: String?
    /// For ``Code/conflict``: the object's current resourceVersion (nil when it is gone).
    public var currentVersion: String?
    /// For transactions: the index of the operation (in the order they were added) whose
    /// condition failed; for ``Code/preconditionFailed``, the index of the extra condition.
    public var failedIndex: Int?
    /// For ``Code/preconditionFailed``: the reason given with the condition, for logs.
    public var failedCondition: String?
    /// For ``Code/preconditionFailed``: the tag given with the condition, if any; decide on
    /// this, not on ``failedCondition``.
    public var failedConditionTag: StoreTransaction.ConditionTag?
    /// The etcd error underneath, for ``Code/unavailable``.
    public var etcd: EtcdError?

    /// Makes an error; prefer the static constructors.
    public init(code: Code, message: String, kind: ResourceKind? = nil, key: String? = nil) {
        self.code = code
        self.message = message
        self.kind = kind
        self.key = key
    }

    /// The object already exists.
    public static func alreadyExists(_ kind: ResourceKind?, key: String) -> StoreError {
        StoreError(code: .alreadyExists, message: "\(key) already exists", kind: kind, key: key)
    }
    /// The object does not exist.
    public static func notFound(_ kind: ResourceKind?, key: String) -> StoreError {
        StoreError(code: .notFound, message: "\(key) not found", kind: kind, key: key)
    }
    /// The object is at `currentVersion`, not the version the caller had.
    public static func conflict(_ currentVersion: String?, kind: ResourceKind? = nil, key: String? = nil) -> StoreError {
        var e = StoreError(
            code: .conflict, message: "\(key ?? "object") is at version \(currentVersion ?? "(deleted)")", kind: kind,
            key: key)
        e.currentVersion = currentVersion
        return e
    }
    /// The caller's deadline passed before the store's next step on `key`.
    public static func deadlineExceeded(_ kind: ResourceKind?, key: String) -> StoreError {
        StoreError(code: .deadlineExceeded, message: "the caller's deadline passed before \(key) was written", kind: kind, key: key)
    }
    /// Wraps an etcd failure: ``Code/compacted`` for a watch from a compacted revision,
    /// ``Code/unavailable`` for anything else.
    public static func etcd(_ error: EtcdError) -> StoreError {
        var e = StoreError(code: error.code == .compacted ? .compacted : .unavailable, message: error.description)
        e.etcd = error
        return e
    }

    public var description: String {
        var s = "StoreError.\(code): \(message)"
        if let failedIndex { s += " (operation \(failedIndex))" }
        return s
    }
}
