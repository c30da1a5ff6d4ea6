/// A value kept out of line, in a box shared by every copy until one of them changes it: a
/// struct that stores `CopyOnWrite<ReplicaSpec>` carries one pointer instead of the value, and
/// exposes the value through a property that reads and writes in place:
///
/// ```swift
/// @usableFromInline var _spec: CopyOnWrite<ReplicaSpec>
/// @inlinable public var spec: ReplicaSpec {
///     _read { yield _spec.value }
///     set { _spec.value = newValue }
///     _modify { yield &_spec.value }
/// }
/// ```
///
/// For a large part of an object that is copied far more often than it changes. A
/// ``Replica`` is copied whole into every informer's map and list, the scheduler's pass and
/// snapshot, and the api-server's caches; with its spec and status inline it is 736 bytes, so
/// 5,000 replicas held three times over cost some 11 MB, where the boxes are held once. The
/// same goes for a ``Node`` (240 bytes inline) and a ``ModelServer`` (584).
///
/// The accessors are inlinable and borrow (`_read`, `_modify`): reading `replica.spec.gpus`
/// in another module loads one field, not a copy of the whole spec. (A property wrapper's
/// accessors are opaque calls from other modules, each returning a copy of the whole value:
/// tried first, the api-servers answered applies 5 to 15 times slower at 5,000 nodes.)
///
/// Encoding, decoding, equality and hashing are the wrapped value's: the JSON of a struct is
/// the same with or without the box.
@frozen
public struct CopyOnWrite<Value: Sendable & Hashable>: Sendable, Hashable {
    /// The box. Only ever mutated while uniquely referenced (see ``value``'s setter), so a box
    /// reachable from two copies is never written: immutable for every reader.
    @usableFromInline
    final class Box: @unchecked Sendable {
        @usableFromInline var value: Value
        @inlinable init(_ value: Value) { self.value = value }
    }

    @usableFromInline var box: Box

    /// Boxes `value`.
    @inlinable
    public init(_ value: Value) {
        box = Box(value)
    }

    /// The value; a write changes the box in place when no other copy shares it, and gives
    /// this copy a box of its own otherwise.
    @inlinable
    public var value: Value {
        _read { yield box.value }
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
    @inlinable
    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.box === rhs.box || lhs.box.value == rhs.box.value
    }

    /// Hashes the value.
    @inlinable
    public func hash(into hasher: inout Hasher) {
        hasher.combine(box.value)
    }
}

extension CopyOnWrite: Encodable where Value: Encodable {
    /// Encodes the value itself, as if it were not boxed.
    public func encode(to encoder: any Encoder) throws {
        try box.value.encode(to: encoder)
    }
}

extension CopyOnWrite: Decodable where Value: Decodable {
    /// Decodes the value itself, as if it were not boxed.
    public init(from decoder: any Decoder) throws {
        self.init(try Value(from: decoder))
    }
}
