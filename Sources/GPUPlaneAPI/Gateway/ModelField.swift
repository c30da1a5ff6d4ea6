import Foundation

/// The top-level `model` field of an OpenAI-protocol request body, found and replaced by one
/// scan of the bytes: the gateway reads or pins it on every request, and a parse into
/// `JSONSerialization` objects and back cost the api-server more than the rest of the forwarding.
///
/// Only the top level counts: a `"model"` inside `messages` or any nested value is left alone.
enum ModelField {
    /// Where the top-level `model` value sits in a JSON object body.
    struct Location {
        /// The byte range of the value (quotes included for a string).
        var value: Range<Int>
        /// The value when it is a JSON string; nil for other kinds of value.
        var string: String?
    }

    /// The body's shape, as far as the gateway cares.
    enum Scan {
        /// A JSON object with a top-level `model`.
        case found(Location)
        /// A JSON object without one; `openBrace` is the index of its opening brace.
        case absent(openBrace: Int)
        /// Not a JSON object, or malformed.
        case notAnObject
    }

    /// Scans `body` once.
    static func scan(_ body: [UInt8]) -> Scan {
        var i = 0
        let n = body.count
        func skipSpace() { while i < n, body[i] == 0x20 || body[i] == 0x0A || body[i] == 0x0D || body[i] == 0x09 { i += 1 } }
        /// Moves past the string starting at `i` (on its opening quote); false when unterminated.
        func skipString() -> Bool {
            i += 1
            while i < n {
                switch body[i] {
                case 0x5C: i += 2
                case 0x22:
                    i += 1
                    return true
                default: i += 1
                }
            }
            return false
        }
        /// Moves past the value starting at `i`; false when malformed.
        func skipValue() -> Bool {
            guard i < n else { return false }
            switch body[i] {
            case 0x22: return skipString()
            case 0x7B, 0x5B:
                var depth = 0
                while i < n {
                    switch body[i] {
                    case 0x22:
                        guard skipString() else { return false }
                        continue
                    case 0x7B, 0x5B: depth += 1
                    case 0x7D, 0x5D:
                        depth -= 1
                        if depth == 0 {
                            i += 1
                            return true
                        }
                    default: break
                    }
                    i += 1
                }
                return false
            default:
                let start = i
                while i < n, body[i] != 0x2C, body[i] != 0x7D, body[i] != 0x5D, body[i] != 0x20, body[i] != 0x0A,
                    body[i] != 0x0D, body[i] != 0x09
                {
                    i += 1
                }
                return i > start
            }
        }
        skipSpace()
        guard i < n, body[i] == 0x7B else { return .notAnObject }
        let open = i
        i += 1
        skipSpace()
        if i < n, body[i] == 0x7D { return .absent(openBrace: open) }
        // The object is read to its end, so a truncated body is refused; of repeated `model`
        // keys the last counts, as with most JSON parsers.
        var found: Location?
        while i < n {
            skipSpace()
            guard i < n, body[i] == 0x22 else { return .notAnObject }
            let keyStart = i + 1
            guard skipString() else { return .notAnObject }
            let isModel = i - 1 - keyStart == 5 && body[keyStart..<(i - 1)].elementsEqual("model".utf8)
            skipSpace()
            guard i < n, body[i] == 0x3A else { return .notAnObject }
            i += 1
            skipSpace()
            let valueStart = i
            guard skipValue() else { return .notAnObject }
            if isModel { found = Location(value: valueStart..<i, string: string(body[valueStart..<i])) }
            skipSpace()
            guard i < n else { return .notAnObject }
            if body[i] == 0x7D { return found.map { .found($0) } ?? .absent(openBrace: open) }
            guard body[i] == 0x2C else { return .notAnObject }
            i += 1
        }
        return .notAnObject
    }

    /// `body` with its top-level `model` set to `name` (added when absent); nil when the body
    /// is not a JSON object.
    static func pinned(_ body: [UInt8], to name: String) -> [UInt8]? {
        let value = quoted(name)
        switch scan(body) {
        case .found(let location):
            var out = [UInt8]()
            out.reserveCapacity(body.count - location.value.count + value.count)
            out += body[..<location.value.lowerBound]
            out += value
            out += body[location.value.upperBound...]
            return out
        case .absent(let open):
            var out = [UInt8]()
            out.reserveCapacity(body.count + value.count + 10)
            out += body[...open]
            out += Array(#""model":"#.utf8) + value
            // `{}` stays an object of one field; otherwise a comma before the first field.
            let rest = body[(open + 1)...]
            if rest.first(where: { $0 != 0x20 && $0 != 0x0A && $0 != 0x0D && $0 != 0x09 }) != 0x7D { out.append(0x2C) }
            out += rest
            return out
        case .notAnObject:
            return nil
        }
    }

    /// A JSON string value's text, or nil when `bytes` is not a string.
    private static func string(_ bytes: ArraySlice<UInt8>) -> String? {
        guard bytes.count >= 2, bytes.first == 0x22, bytes.last == 0x22 else { return nil }
        let inner = bytes.dropFirst().dropLast()
        if !inner.contains(0x5C) { return String(decoding: inner, as: UTF8.self) }
        // Escapes: rare in a model name; let Foundation undo them.
        return (try? JSONSerialization.jsonObject(with: Data(bytes), options: .fragmentsAllowed)) as? String
    }

    /// `name` as a JSON string, quotes included.
    static func quoted(_ name: String) -> [UInt8] {
        var out: [UInt8] = [0x22]
        for byte in name.utf8 {
            switch byte {
            case 0x22: out += [0x5C, 0x22]
            case 0x5C: out += [0x5C, 0x5C]
            case 0..<0x20: out += Array(String(format: "\\u%04x", byte).utf8)
            default: out.append(byte)
            }
        }
        out.append(0x22)
        return out
    }
}
