/// A value kept in one heap object that copies share until one of them changes it (copy on
/// write, as `Array` keeps its elements).
///
/// The stored kinds hold their fields in one: a ``Replica``'s fields take some 700 bytes and a
/// ``Node``'s some 240, and every dictionary bucket, list, snapshot and watch event that held
/// them inline carried a copy of all of it (an informer's dictionary of 5,000 replicas, sized
/// to 8,192 buckets, held 6 MB of them). Copies now cost a reference; a change to one copies
/// its fields once.
public struct CopyOnWrite<Value: Sendable>: @unchecked Sendable {
    // Sendable: the storage is written only through `value`'s modify accessor, and only while
    // this copy holds the one reference (`isKnownUniquelyReferenced`); a shared box is read-only.
    private final class Storage {
        var value: Value
        init(_ value: Value) { self.value = value }
    }

    private var storage: Storage

    /// Boxes `value`.
    public init(_ value: Value) {
        storage = Storage(value)
    }

    /// The value; a change copies it first when another copy shares the box.
    public var value: Value {
        _read { yield storage.value }
        _modify {
            if !isKnownUniquelyReferenced(&storage) { storage = Storage(storage.value) }
            yield &storage.value
        }
    }

    /// Whether `other` shares this copy's box (and so its value).
    public func isSameBox(as other: CopyOnWrite<Value>) -> Bool { storage === other.storage }
}

extension CopyOnWrite: Equatable where Value: Equatable {
    /// Equal when they share a box or hold equal values.
    public static func == (lhs: CopyOnWrite<Value>, rhs: CopyOnWrite<Value>) -> Bool {
        lhs.isSameBox(as: rhs) || lhs.value == rhs.value
    }
}

extension CopyOnWrite: Hashable where Value: Hashable {
    /// Hashes the value (equal values in separate boxes hash alike).
    public func hash(into hasher: inout Hasher) { value.hash(into: &hasher) }
}

extension CopyOnWrite: Codable where Value: Codable {
    /// Decodes the value in place of the box: the JSON is the value's own.
    public init(from decoder: any Decoder) throws {
        self.init(try Value(from: decoder))
    }

    /// Encodes the value in place of the box.
    public func encode(to encoder: any Encoder) throws {
        try value.encode(to: encoder)
    }
}
