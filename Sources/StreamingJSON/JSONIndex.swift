#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A JSON document scanned once into a flat list of tokens, for `StreamingJSONDecoder`.
///
/// Each value is one token; an object's tokens are followed by its keys and values in turn, an
/// array's by its elements, and every token knows where the next value after it starts, so a
/// container skips a member without looking inside it.
final class JSONIndex {
    enum Kind: UInt8 { case object, array, string, number, `true`, `false`, null }

    /// 20 bytes, not 48 with `Int` fields: a watch line of 1.3 MB from etcd (a scheduler's
    /// commit seen by an informer) has some 165,000 tokens, and their array was the largest
    /// allocation of a scheduler's heap (heaptrack, 1,000 hollow nodes). Positions fit in 32
    /// bits: ``JSONIndex/init(_:)`` refuses a document of 4 GiB or more.
    struct Token {
        var kind: Kind
        /// A string with a backslash escape in it.
        var escaped: Bool
        private var storedStart: UInt32
        private var storedEnd: UInt32
        private var storedNext: UInt32
        private var storedCount: UInt32

        init(kind: Kind, start: Int, end: Int, next: Int, count: Int, escaped: Bool) {
            self.kind = kind
            self.escaped = escaped
            storedStart = UInt32(truncatingIfNeeded: start)
            storedEnd = UInt32(truncatingIfNeeded: end)
            storedNext = UInt32(truncatingIfNeeded: next)
            storedCount = UInt32(truncatingIfNeeded: count)
        }

        /// For strings, the bytes between the quotes; for numbers, the literal.
        var start: Int {
            get { Int(storedStart) }
            set { storedStart = UInt32(truncatingIfNeeded: newValue) }
        }
        var end: Int {
            get { Int(storedEnd) }
            set { storedEnd = UInt32(truncatingIfNeeded: newValue) }
        }
        /// The token after this value and everything inside it.
        var next: Int {
            get { Int(storedNext) }
            set { storedNext = UInt32(truncatingIfNeeded: newValue) }
        }
        /// Members (objects) or elements (arrays).
        var count: Int {
            get { Int(storedCount) }
            set { storedCount = UInt32(truncatingIfNeeded: newValue) }
        }
    }

    let bytes: [UInt8]
    /// Where decoded string values are shared, if anywhere.
    let strings: StringTable?
    /// Written only while scanning, then read by one decoding on one thread: no access overlaps
    /// another, so the per-access exclusivity check is skipped.
    @exclusivity(unchecked) private(set) var tokens: [Token] = []

    /// Scans `bytes`; throws `DecodingError.dataCorrupted` when they are not one JSON value.
    init(_ bytes: [UInt8], strings: StringTable? = nil) throws {
        self.bytes = bytes
        self.strings = strings
        guard bytes.count < Int(UInt32.max) else { throw corrupted("a JSON document of 4 GiB or more", at: 0) }
        tokens.reserveCapacity(bytes.count / 8 + 4)
        var position = skipSpace(0)
        try parseValue(&position, depth: 0)
        position = skipSpace(position)
        guard position == bytes.count else { throw corrupted("unexpected bytes after the JSON value", at: position) }
    }

    private func corrupted(_ message: String, at position: Int) -> DecodingError {
        DecodingError.dataCorrupted(.init(codingPath: [], debugDescription: "\(message) (byte \(position))"))
    }

    private func skipSpace(_ start: Int) -> Int {
        var position = start
        while position < bytes.count {
            switch bytes[position] {
            case 0x20, 0x09, 0x0A, 0x0D: position += 1
            default: return position
            }
        }
        return position
    }

    private func parseValue(_ position: inout Int, depth: Int) throws {
        guard depth < 512 else { throw corrupted("JSON nested too deeply", at: position) }
        guard position < bytes.count else { throw corrupted("unexpected end of JSON", at: position) }
        switch bytes[position] {
        case UInt8(ascii: "{"):
            let index = tokens.count
            tokens.append(Token(kind: .object, start: position, end: position, next: 0, count: 0, escaped: false))
            position = skipSpace(position + 1)
            var count = 0
            if position < bytes.count, bytes[position] == UInt8(ascii: "}") {
                position += 1
            } else {
                while true {
                    guard position < bytes.count, bytes[position] == UInt8(ascii: "\"") else {
                        throw corrupted("expected a key", at: position)
                    }
                    try parseString(&position)
                    position = skipSpace(position)
                    guard position < bytes.count, bytes[position] == UInt8(ascii: ":") else {
                        throw corrupted("expected ':'", at: position)
                    }
                    position = skipSpace(position + 1)
                    try parseValue(&position, depth: depth + 1)
                    count += 1
                    position = skipSpace(position)
                    guard position < bytes.count else { throw corrupted("unterminated object", at: position) }
                    if bytes[position] == UInt8(ascii: ",") {
                        position = skipSpace(position + 1)
                    } else if bytes[position] == UInt8(ascii: "}") {
                        position += 1
                        break
                    } else {
                        throw corrupted("expected ',' or '}'", at: position)
                    }
                }
            }
            tokens[index].count = count
            tokens[index].end = position
            tokens[index].next = tokens.count
        case UInt8(ascii: "["):
            let index = tokens.count
            tokens.append(Token(kind: .array, start: position, end: position, next: 0, count: 0, escaped: false))
            position = skipSpace(position + 1)
            var count = 0
            if position < bytes.count, bytes[position] == UInt8(ascii: "]") {
                position += 1
            } else {
                while true {
                    try parseValue(&position, depth: depth + 1)
                    count += 1
                    position = skipSpace(position)
                    guard position < bytes.count else { throw corrupted("unterminated array", at: position) }
                    if bytes[position] == UInt8(ascii: ",") {
                        position = skipSpace(position + 1)
                    } else if bytes[position] == UInt8(ascii: "]") {
                        position += 1
                        break
                    } else {
                        throw corrupted("expected ',' or ']'", at: position)
                    }
                }
            }
            tokens[index].count = count
            tokens[index].end = position
            tokens[index].next = tokens.count
        case UInt8(ascii: "\""):
            try parseString(&position)
        case UInt8(ascii: "t"):
            try literal("true", .true, &position)
        case UInt8(ascii: "f"):
            try literal("false", .false, &position)
        case UInt8(ascii: "n"):
            try literal("null", .null, &position)
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            let start = position
            position += 1
            while position < bytes.count, Self.isNumberByte(bytes[position]) { position += 1 }
            tokens.append(Token(kind: .number, start: start, end: position, next: tokens.count + 1, count: 0, escaped: false))
        default:
            throw corrupted("unexpected byte \(bytes[position])", at: position)
        }
    }

    private static func isNumberByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E"),
            UInt8(ascii: "+"), UInt8(ascii: "-"):
            return true
        default:
            return false
        }
    }

    private func literal(_ text: StaticString, _ kind: Kind, _ position: inout Int) throws {
        let count = text.utf8CodeUnitCount
        guard position + count <= bytes.count else { throw corrupted("unexpected end of JSON", at: position) }
        let matches = text.withUTF8Buffer { expected in
            (0..<count).allSatisfy { bytes[position + $0] == expected[$0] }
        }
        guard matches else { throw corrupted("unexpected literal", at: position) }
        tokens.append(Token(kind: kind, start: position, end: position + count, next: tokens.count + 1, count: 0, escaped: false))
        position += count
    }

    private func parseString(_ position: inout Int) throws {
        let start = position + 1
        var index = start
        var escaped = false
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                tokens.append(Token(kind: .string, start: start, end: index, next: tokens.count + 1, count: 0, escaped: escaped))
                position = index + 1
                return
            }
            if byte == UInt8(ascii: "\\") {
                escaped = true
                index += 2
                continue
            }
            if byte < 0x20 { throw corrupted("unescaped control character in a string", at: index) }
            index += 1
        }
        throw corrupted("unterminated string", at: start - 1)
    }

    // MARK: Reading tokens

    /// The text of the string token at `index`, unescaped.
    func string(_ index: Int) throws -> String {
        let token = tokens[index]
        if !token.escaped {
            return bytes.withUnsafeBufferPointer {
                String(decoding: UnsafeBufferPointer(rebasing: $0[token.start..<token.end]), as: UTF8.self)
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity(token.end - token.start)
        var position = token.start
        while position < token.end {
            let byte = bytes[position]
            guard byte == UInt8(ascii: "\\") else {
                out.append(byte)
                position += 1
                continue
            }
            guard position + 1 < token.end else { throw corrupted("bad escape", at: position) }
            let escape = bytes[position + 1]
            position += 2
            switch escape {
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "/"): out.append(0x2F)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try hex4(&position, end: token.end)
                if (0xD800...0xDBFF).contains(scalar), position + 6 <= token.end, bytes[position] == UInt8(ascii: "\\"),
                    bytes[position + 1] == UInt8(ascii: "u")
                {
                    var after = position + 2
                    let low = try hex4(&after, end: token.end)
                    if (0xDC00...0xDFFF).contains(low) {
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        position = after
                    }
                }
                let unicode = Unicode.Scalar(scalar) ?? "\u{FFFD}"
                out.append(contentsOf: String(Character(unicode)).utf8)
            default:
                throw corrupted("bad escape", at: position - 2)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private func hex4(_ position: inout Int, end: Int) throws -> UInt32 {
        guard position + 4 <= end else { throw corrupted("bad \\u escape", at: position) }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[position]
            let digit: UInt32
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - UInt8(ascii: "A") + 10)
            default: throw corrupted("bad \\u escape", at: position)
            }
            value = value << 4 | digit
            position += 1
        }
        return value
    }

    /// Whether the string token at `index` is exactly `key`.
    func stringEquals(_ index: Int, _ key: String) -> Bool {
        let token = tokens[index]
        if token.escaped { return (try? string(index)) == key }
        var key = key
        return key.withUTF8 { utf8 in
            guard utf8.count == token.end - token.start else { return false }
            var offset = 0
            while offset < utf8.count {
                if utf8[offset] != bytes[token.start + offset] { return false }
                offset += 1
            }
            return true
        }
    }

    /// The literal of the number token at `index`.
    func numberText(_ index: Int) -> Substring {
        let token = tokens[index]
        return Substring(String(decoding: bytes[token.start..<token.end], as: UTF8.self))
    }
}
