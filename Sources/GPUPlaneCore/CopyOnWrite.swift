/// A value kept out of line, in a box shared by every copy until one of them changes it:
/// `@CopyOnWrite public var spec: ReplicaSpec` reads and writes like a stored property, but the
/// struct holding it carries one pointer instead of the value.
///
/// For a large part of an object that is copied far more often than it changes. A
/// ``Replica`` is copied whole into every informer's map and list, the scheduler's pass and
/// snapshot, and the api-server's caches; with its spec and status inline it is 736 bytes, so
/// 5,000 replicas held three times over cost some 11 MB, where the boxes are held once.
///
/// Encoding, decoding, equality and hashing are the wrapped value's: the JSON of a struct is
/// the same with or without the wrapper.
@propertyWrapper
public struct CopyOnWrite<Value: Sendable & Hashable>: Sendable, Hashable {
    /// The box. Only ever mutated while uniquely referenced (see ``wrappedValue``'s setter), so
    /// a box reachable from two copies is never written: immutable for every reader.
    private final class Box: @unchecked Sendable {
        var value: Value
        init(_ value: Value) { self.value = value }
    }

    private var box: Box

    /// Wraps `wrappedValue`.
    public init(wrappedValue: Value) {
        box = Box(wrappedValue)
    }

    /// The value; setting it writes the box in place when no other copy shares it, and gives
    /// this copy a box of its own otherwise.
    public var wrappedValue: Value {
        get { box.value }
        set {
            if isKnownUniquelyReferenced(&box) {
                box.value = newValue
            } else {
                box = Box(newValue)
            }
        }
        _modify {
            if !isKnownUniquelyReferenced(&box) { box = Box(box.value) }
            yield &box.value
        }
    }

    /// Equal when the values are (the same box is, without comparing).
    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.box === rhs.box || lhs.box.value == rhs.box.value
    }

    /// Hashes the value.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(box.value)
    }
}

extension CopyOnWrite: Encodable where Value: Encodable {
    /// Encodes the value itself, as if it were not wrapped.
    public func encode(to encoder: any Encoder) throws {
        try box.value.encode(to: encoder)
    }
}

extension CopyOnWrite: Decodable where Value: Decodable {
    /// Decodes the value itself, as if it were not wrapped.
    public init(from decoder: any Decoder) throws {
        self.init(wrappedValue: try Value(from: decoder))
    }
}
