#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The `Encoder` handed to each value: a depth in the sink's container stack.
struct StreamingEncoder: Encoder {
    let sink: JSONSink
    let depth: Int
    var codingPath: [any CodingKey] { [] }
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        sink.openContainer(.object, depth: depth)
        return KeyedEncodingContainer(KeyedContainer<Key>(sink: sink, depth: depth))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        sink.openContainer(.array, depth: depth)
        return UnkeyedContainer(sink: sink, depth: depth)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer {
        SingleValueContainer(sink: sink, depth: depth)
    }
}

private struct KeyedContainer<Key: CodingKey>: KeyedEncodingContainerProtocol {
    let sink: JSONSink
    /// The depth of this object in the sink.
    let depth: Int
    var codingPath: [any CodingKey] { [] }

    @inline(__always)
    private func member(_ key: Key, _ write: () throws -> Void) rethrows {
        let started = sink.beginMember(depth: depth, key: key.stringValue)
        try write()
        sink.endMember(depth: depth, started)
    }

    mutating func encodeNil(forKey key: Key) throws { member(key) { sink.writeNull() } }
    mutating func encode(_ value: Bool, forKey key: Key) throws { member(key) { sink.writeBool(value) } }
    mutating func encode(_ value: String, forKey key: Key) throws { member(key) { sink.writeString(value) } }
    mutating func encode(_ value: Double, forKey key: Key) throws { try member(key) { try sink.writeFloatingPoint(value) } }
    mutating func encode(_ value: Float, forKey key: Key) throws { try member(key) { try sink.writeFloatingPoint(value) } }
    mutating func encode(_ value: Int, forKey key: Key) throws { member(key) { sink.writeInteger(value) } }
    mutating func encode(_ value: Int8, forKey key: Key) throws { member(key) { sink.writeInteger(value) } }
    mutating func encode(_ value: Int16, forKey key: Key) throws { member(key) { sink.writeInteger(value) } }
    mutating func encode(_ value: Int32, forKey key: Key) throws { member(key) { sink.writeInteger(value) } }
    mutating func encode(_ value: Int64, forKey key: Key) throws { member(key) { sink.writeInteger(value) } }
    mutating func encode(_ value: UInt, forKey key: Key) throws { member(key) { sink.writeInteger(value) } }
    mutating func encode(_ value: UInt8, forKey key: Key) throws { member(key) { sink.writeInteger(value) } }
    mutating func encode(_ value: UInt16, forKey key: Key) throws { member(key) { sink.writeInteger(value) } }
    mutating func encode(_ value: UInt32, forKey key: Key) throws { member(key) { sink.writeInteger(value) } }
    mutating func encode(_ value: UInt64, forKey key: Key) throws { member(key) { sink.writeInteger(value) } }
    mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
        try member(key) { try sink.writeValue(value, depth: depth + 1) }
    }

    // Nested containers and super encoders leave their member open; the sink records it at the
    // next member of this object or when the object closes.
    mutating func nestedContainer<NestedKey: CodingKey>(
        keyedBy keyType: NestedKey.Type, forKey key: Key
    ) -> KeyedEncodingContainer<NestedKey> {
        sink.holdMember(depth: depth, sink.beginMember(depth: depth, key: key.stringValue))
        sink.openContainer(.object, depth: depth + 1)
        return KeyedEncodingContainer(KeyedContainer<NestedKey>(sink: sink, depth: depth + 1))
    }

    mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
        sink.holdMember(depth: depth, sink.beginMember(depth: depth, key: key.stringValue))
        sink.openContainer(.array, depth: depth + 1)
        return UnkeyedContainer(sink: sink, depth: depth + 1)
    }

    mutating func superEncoder() -> any Encoder {
        sink.holdMember(depth: depth, sink.beginMember(depth: depth, key: "super"))
        return StreamingEncoder(sink: sink, depth: depth + 1)
    }

    mutating func superEncoder(forKey key: Key) -> any Encoder {
        sink.holdMember(depth: depth, sink.beginMember(depth: depth, key: key.stringValue))
        return StreamingEncoder(sink: sink, depth: depth + 1)
    }
}

private struct UnkeyedContainer: UnkeyedEncodingContainer {
    let sink: JSONSink
    /// The depth of this array in the sink.
    let depth: Int
    var codingPath: [any CodingKey] { [] }
    var count: Int { sink.count(depth: depth) }

    mutating func encodeNil() throws { sink.beginElement(depth: depth); sink.writeNull() }
    mutating func encode(_ value: Bool) throws { sink.beginElement(depth: depth); sink.writeBool(value) }
    mutating func encode(_ value: String) throws { sink.beginElement(depth: depth); sink.writeString(value) }
    mutating func encode(_ value: Double) throws { sink.beginElement(depth: depth); try sink.writeFloatingPoint(value) }
    mutating func encode(_ value: Float) throws { sink.beginElement(depth: depth); try sink.writeFloatingPoint(value) }
    mutating func encode(_ value: Int) throws { sink.beginElement(depth: depth); sink.writeInteger(value) }
    mutating func encode(_ value: Int8) throws { sink.beginElement(depth: depth); sink.writeInteger(value) }
    mutating func encode(_ value: Int16) throws { sink.beginElement(depth: depth); sink.writeInteger(value) }
    mutating func encode(_ value: Int32) throws { sink.beginElement(depth: depth); sink.writeInteger(value) }
    mutating func encode(_ value: Int64) throws { sink.beginElement(depth: depth); sink.writeInteger(value) }
    mutating func encode(_ value: UInt) throws { sink.beginElement(depth: depth); sink.writeInteger(value) }
    mutating func encode(_ value: UInt8) throws { sink.beginElement(depth: depth); sink.writeInteger(value) }
    mutating func encode(_ value: UInt16) throws { sink.beginElement(depth: depth); sink.writeInteger(value) }
    mutating func encode(_ value: UInt32) throws { sink.beginElement(depth: depth); sink.writeInteger(value) }
    mutating func encode(_ value: UInt64) throws { sink.beginElement(depth: depth); sink.writeInteger(value) }
    mutating func encode<T: Encodable>(_ value: T) throws {
        sink.beginElement(depth: depth)
        try sink.writeValue(value, depth: depth + 1)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
        sink.beginElement(depth: depth)
        sink.openContainer(.object, depth: depth + 1)
        return KeyedEncodingContainer(KeyedContainer<NestedKey>(sink: sink, depth: depth + 1))
    }

    mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
        sink.beginElement(depth: depth)
        sink.openContainer(.array, depth: depth + 1)
        return UnkeyedContainer(sink: sink, depth: depth + 1)
    }

    mutating func superEncoder() -> any Encoder {
        sink.beginElement(depth: depth)
        return StreamingEncoder(sink: sink, depth: depth + 1)
    }
}

private struct SingleValueContainer: SingleValueEncodingContainer {
    let sink: JSONSink
    let depth: Int
    var codingPath: [any CodingKey] { [] }

    mutating func encodeNil() throws { sink.writeNull() }
    mutating func encode(_ value: Bool) throws { sink.writeBool(value) }
    mutating func encode(_ value: String) throws { sink.writeString(value) }
    mutating func encode(_ value: Double) throws { try sink.writeFloatingPoint(value) }
    mutating func encode(_ value: Float) throws { try sink.writeFloatingPoint(value) }
    mutating func encode(_ value: Int) throws { sink.writeInteger(value) }
    mutating func encode(_ value: Int8) throws { sink.writeInteger(value) }
    mutating func encode(_ value: Int16) throws { sink.writeInteger(value) }
    mutating func encode(_ value: Int32) throws { sink.writeInteger(value) }
    mutating func encode(_ value: Int64) throws { sink.writeInteger(value) }
    mutating func encode(_ value: UInt) throws { sink.writeInteger(value) }
    mutating func encode(_ value: UInt8) throws { sink.writeInteger(value) }
    mutating func encode(_ value: UInt16) throws { sink.writeInteger(value) }
    mutating func encode(_ value: UInt32) throws { sink.writeInteger(value) }
    mutating func encode(_ value: UInt64) throws { sink.writeInteger(value) }
    mutating func encode<T: Encodable>(_ value: T) throws { try sink.writeValue(value, depth: depth) }
}
