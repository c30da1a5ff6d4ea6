#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A JSON decoder for data gpuplane wrote itself or got from etcd: one scan into a flat token
/// list, then `Decodable` reads straight from it, where Foundation's `JSONDecoder` builds and
/// walks a heavier map with coding paths.
///
/// Its results equal `JSONDecoder`'s with `.iso8601` dates and base64 `Data` (the tests hold it
/// to that). Malformed JSON and type mismatches throw `DecodingError`, but without coding
/// paths, so user input that needs a precise error message goes through `JSONDecoder`.
public enum StreamingJSONDecoder {
    /// Decodes a `T` from `data`. With `strings`, its strings (values and dictionary keys) are
    /// shared through that table with everything decoded through it: for objects kept long, as
    /// a cache keeps them.
    public static func decode<T: Decodable>(_ type: T.Type, from data: Data, strings: StringTable? = nil) throws -> T {
        let index = try JSONIndex(Array(data), strings: strings)
        return try IndexDecoder(index: index, token: 0).decodeValue(T.self)
    }
}

private func mismatch(_ type: Any.Type, _ what: String) -> DecodingError {
    DecodingError.typeMismatch(type, .init(codingPath: [], debugDescription: "expected \(type), found \(what)"))
}

/// A decoder positioned on one token.
private struct IndexDecoder: Decoder {
    let index: JSONIndex
    let token: Int
    var codingPath: [any CodingKey] { [] }
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard index.tokens[token].kind == .object else { throw mismatch([String: Any].self, "\(index.tokens[token].kind)") }
        return KeyedDecodingContainer(KeyedIndexContainer<Key>(index: index, object: token))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        guard index.tokens[token].kind == .array else { throw mismatch([Any].self, "\(index.tokens[token].kind)") }
        return UnkeyedIndexContainer(index: index, array: token)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer { SingleIndexContainer(decoder: self) }

    // MARK: Values

    func decodeValue<T: Decodable>(_ type: T.Type) throws -> T {
        if T.self == Data.self {
            let text = try decodeText()
            guard let data = Data(base64Encoded: text), let value = data as? T else {
                throw DecodingError.dataCorrupted(.init(codingPath: [], debugDescription: "not base64: \(text.prefix(40))"))
            }
            return value
        }
        if T.self == Date.self {
            let text = try decodeText()
            guard let value = try Date.ISO8601FormatStyle().parse(text) as? T else { throw mismatch(T.self, "a date") }
            return value
        }
        if T.self == URL.self {
            let text = try decodeText()
            guard let url = URL(string: text), let value = url as? T else {
                throw DecodingError.dataCorrupted(.init(codingPath: [], debugDescription: "not a URL: \(text)"))
            }
            return value
        }
        return try T(from: self)
    }

    var isNull: Bool { index.tokens[token].kind == .null }

    /// A string value, shared through the index's ``StringTable`` when it has one.
    func decodeString() throws -> String {
        let text = try decodeText()
        return index.strings?.share(text) ?? text
    }

    /// A string token's text for parsing into something else (a date, base64, a URL): never
    /// kept, so never put in a ``StringTable``.
    func decodeText() throws -> String {
        guard index.tokens[token].kind == .string else { throw mismatch(String.self, "\(index.tokens[token].kind)") }
        return try index.string(token)
    }

    func decodeBool() throws -> Bool {
        switch index.tokens[token].kind {
        case .true: return true
        case .false: return false
        case let kind: throw mismatch(Bool.self, "\(kind)")
        }
    }

    func decodeInteger<T: FixedWidthInteger>(_ type: T.Type) throws -> T {
        guard index.tokens[token].kind == .number else { throw mismatch(T.self, "\(index.tokens[token].kind)") }
        let text = index.numberText(token)
        if let value = T(text) { return value }
        // JSONDecoder also takes an integral number written with a fraction or exponent.
        if let double = Double(text), double.rounded() == double, let value = T(exactly: double) { return value }
        throw DecodingError.dataCorrupted(.init(codingPath: [], debugDescription: "number \(text) does not fit in \(T.self)"))
    }

    func decodeFloat<T: BinaryFloatingPoint & LosslessStringConvertible>(_ type: T.Type) throws -> T {
        guard index.tokens[token].kind == .number else { throw mismatch(T.self, "\(index.tokens[token].kind)") }
        let text = index.numberText(token)
        guard let value = T(String(text)) else {
            throw DecodingError.dataCorrupted(.init(codingPath: [], debugDescription: "\(text) is not a number"))
        }
        return value
    }
}

private struct KeyedIndexContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let index: JSONIndex
    let object: Int
    var codingPath: [any CodingKey] { [] }

    /// The value token of `key`, if the object has it.
    private func valueToken(_ key: Key) -> Int? {
        let name = key.stringValue
        var member = object + 1
        for _ in 0..<index.tokens[object].count {
            let value = member + 1
            if index.stringEquals(member, name) { return value }
            member = index.tokens[value].next
        }
        return nil
    }

    private func decoder(_ key: Key) throws -> IndexDecoder {
        guard let token = valueToken(key) else {
            throw DecodingError.keyNotFound(key, .init(codingPath: [], debugDescription: "no value for key \(key.stringValue)"))
        }
        return IndexDecoder(index: index, token: token)
    }

    var allKeys: [Key] {
        var keys: [Key] = []
        var member = object + 1
        for _ in 0..<index.tokens[object].count {
            if let name = try? index.string(member), let key = Key(stringValue: index.strings?.share(name) ?? name) { keys.append(key) }
            member = index.tokens[member + 1].next
        }
        return keys
    }

    func contains(_ key: Key) -> Bool { valueToken(key) != nil }
    func decodeNil(forKey key: Key) throws -> Bool { try decoder(key).isNull }
    func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool { try decoder(key).decodeBool() }
    func decode(_ type: String.Type, forKey key: Key) throws -> String { try decoder(key).decodeString() }
    func decode(_ type: Double.Type, forKey key: Key) throws -> Double { try decoder(key).decodeFloat(type) }
    func decode(_ type: Float.Type, forKey key: Key) throws -> Float { try decoder(key).decodeFloat(type) }
    func decode(_ type: Int.Type, forKey key: Key) throws -> Int { try decoder(key).decodeInteger(type) }
    func decode(_ type: Int8.Type, forKey key: Key) throws -> Int8 { try decoder(key).decodeInteger(type) }
    func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 { try decoder(key).decodeInteger(type) }
    func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 { try decoder(key).decodeInteger(type) }
    func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 { try decoder(key).decodeInteger(type) }
    func decode(_ type: UInt.Type, forKey key: Key) throws -> UInt { try decoder(key).decodeInteger(type) }
    func decode(_ type: UInt8.Type, forKey key: Key) throws -> UInt8 { try decoder(key).decodeInteger(type) }
    func decode(_ type: UInt16.Type, forKey key: Key) throws -> UInt16 { try decoder(key).decodeInteger(type) }
    func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 { try decoder(key).decodeInteger(type) }
    func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 { try decoder(key).decodeInteger(type) }
    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T { try decoder(key).decodeValue(type) }

    func decodeIfPresent<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
        guard let token = valueToken(key) else { return nil }
        let decoder = IndexDecoder(index: index, token: token)
        return decoder.isNull ? nil : try decoder.decodeValue(type)
    }

    func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
        try decoder(key).container(keyedBy: type)
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer { try decoder(key).unkeyedContainer() }

    func superDecoder() throws -> any Decoder {
        IndexDecoder(index: index, token: Key(stringValue: "super").flatMap(valueToken) ?? object)
    }

    func superDecoder(forKey key: Key) throws -> any Decoder { try decoder(key) }
}

private struct UnkeyedIndexContainer: UnkeyedDecodingContainer {
    let index: JSONIndex
    let array: Int
    var codingPath: [any CodingKey] { [] }
    var count: Int? { index.tokens[array].count }
    var currentIndex = 0
    /// The token of the element at `currentIndex`.
    private var position: Int

    init(index: JSONIndex, array: Int) {
        self.index = index
        self.array = array
        self.position = array + 1
    }

    var isAtEnd: Bool { currentIndex >= index.tokens[array].count }

    private mutating func next() throws -> IndexDecoder {
        guard !isAtEnd else {
            throw DecodingError.valueNotFound(Any.self, .init(codingPath: [], debugDescription: "the array has no more elements"))
        }
        let decoder = IndexDecoder(index: index, token: position)
        position = index.tokens[position].next
        currentIndex += 1
        return decoder
    }

    mutating func decodeNil() throws -> Bool {
        guard !isAtEnd, index.tokens[position].kind == .null else { return false }
        _ = try next()
        return true
    }
    mutating func decode(_ type: Bool.Type) throws -> Bool { try next().decodeBool() }
    mutating func decode(_ type: String.Type) throws -> String { try next().decodeString() }
    mutating func decode(_ type: Double.Type) throws -> Double { try next().decodeFloat(type) }
    mutating func decode(_ type: Float.Type) throws -> Float { try next().decodeFloat(type) }
    mutating func decode(_ type: Int.Type) throws -> Int { try next().decodeInteger(type) }
    mutating func decode(_ type: Int8.Type) throws -> Int8 { try next().decodeInteger(type) }
    mutating func decode(_ type: Int16.Type) throws -> Int16 { try next().decodeInteger(type) }
    mutating func decode(_ type: Int32.Type) throws -> Int32 { try next().decodeInteger(type) }
    mutating func decode(_ type: Int64.Type) throws -> Int64 { try next().decodeInteger(type) }
    mutating func decode(_ type: UInt.Type) throws -> UInt { try next().decodeInteger(type) }
    mutating func decode(_ type: UInt8.Type) throws -> UInt8 { try next().decodeInteger(type) }
    mutating func decode(_ type: UInt16.Type) throws -> UInt16 { try next().decodeInteger(type) }
    mutating func decode(_ type: UInt32.Type) throws -> UInt32 { try next().decodeInteger(type) }
    mutating func decode(_ type: UInt64.Type) throws -> UInt64 { try next().decodeInteger(type) }
    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T { try next().decodeValue(type) }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
        try next().container(keyedBy: type)
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer { try next().unkeyedContainer() }
    mutating func superDecoder() throws -> any Decoder { try next() }
}

private struct SingleIndexContainer: SingleValueDecodingContainer {
    let decoder: IndexDecoder
    var codingPath: [any CodingKey] { [] }

    func decodeNil() -> Bool { decoder.isNull }
    func decode(_ type: Bool.Type) throws -> Bool { try decoder.decodeBool() }
    func decode(_ type: String.Type) throws -> String { try decoder.decodeString() }
    func decode(_ type: Double.Type) throws -> Double { try decoder.decodeFloat(type) }
    func decode(_ type: Float.Type) throws -> Float { try decoder.decodeFloat(type) }
    func decode(_ type: Int.Type) throws -> Int { try decoder.decodeInteger(type) }
    func decode(_ type: Int8.Type) throws -> Int8 { try decoder.decodeInteger(type) }
    func decode(_ type: Int16.Type) throws -> Int16 { try decoder.decodeInteger(type) }
    func decode(_ type: Int32.Type) throws -> Int32 { try decoder.decodeInteger(type) }
    func decode(_ type: Int64.Type) throws -> Int64 { try decoder.decodeInteger(type) }
    func decode(_ type: UInt.Type) throws -> UInt { try decoder.decodeInteger(type) }
    func decode(_ type: UInt8.Type) throws -> UInt8 { try decoder.decodeInteger(type) }
    func decode(_ type: UInt16.Type) throws -> UInt16 { try decoder.decodeInteger(type) }
    func decode(_ type: UInt32.Type) throws -> UInt32 { try decoder.decodeInteger(type) }
    func decode(_ type: UInt64.Type) throws -> UInt64 { try decoder.decodeInteger(type) }
    func decode<T: Decodable>(_ type: T.Type) throws -> T { try decoder.decodeValue(type) }
}
