#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A JSON encoder that writes bytes as it walks the value, for the hot paths of the api-server
/// and the etcd client.
///
/// Its output is byte-for-byte what `JSONEncoder` gives with `.sortedKeys`,
/// `.withoutEscapingSlashes` and `.iso8601` dates (the tests hold it to that), but it does not
/// first build a tree of boxed values: members are written in place, and an object whose keys
/// came out of order is re-ordered once, when it closes.
///
/// `Data` is written as base64, `Date` as ISO 8601 in UTC without fractional seconds, `URL` as
/// its absolute string. Non-finite floating-point values throw, as with `JSONEncoder`'s default.
/// The encoders it hands to values report an empty `codingPath`: tracking it costs an
/// allocation per member, and nothing here reads it.
public enum StreamingJSONEncoder {
    /// The JSON encoding of `value`.
    public static func encode<T: Encodable>(_ value: T) throws -> Data {
        Data(try encodeBytes(value))
    }

    /// The JSON encoding of `value`, as bytes.
    public static func encodeBytes<T: Encodable>(_ value: T) throws -> [UInt8] {
        let sink = JSONSink()
        try sink.writeValue(value, depth: 0)
        sink.close(above: -1)
        return sink.bytes
    }
}

// MARK: - The sink

/// The output buffer and the containers open in it, innermost last.
///
/// One encoding owns a sink and uses it from one thread, and no access to these properties
/// overlaps another, so their dynamic exclusivity checks (a runtime call per access, most of
/// the encoder's time when profiled) are turned off.
final class JSONSink {
    @exclusivity(unchecked) var bytes: [UInt8] = []
    /// Open containers, outermost first; depths strictly increase.
    @exclusivity(unchecked) private var open: [OpenContainer] = []
    /// The members of every open object, in write order; each object owns a suffix.
    @exclusivity(unchecked) private var members: [MemberRecord] = []

    init() {
        bytes.reserveCapacity(1024)
        open.reserveCapacity(16)
        members.reserveCapacity(64)
    }

    enum Kind { case object, array }

    /// A container written so far.
    struct OpenContainer {
        let kind: Kind
        let depth: Int
        /// Where its `{` or `[` is.
        let start: Int
        /// Where its members begin in `members`.
        let firstMember: Int
        var count = 0
        var sorted = true
        /// A member opened for a nested container or super encoder, recorded once that is done.
        var pending: Member?
    }

    /// Where a member's `"key":` was written.
    struct Member {
        /// The opening quote of the key.
        let start: Int
        /// Just past the closing quote of the key.
        let keyEnd: Int
    }

    /// A finished member of an object: its key's bytes (no quotes) and `"key":value`.
    struct MemberRecord {
        let key: Range<Int>
        let range: Range<Int>
    }

    /// The index in `open` of the container at `depth`.
    private func index(of depth: Int) -> Int {
        var index = open.count - 1
        while open[index].depth != depth { index -= 1 }
        return index
    }

    /// Closes every container deeper than `depth`.
    func close(above depth: Int) {
        while let last = open.last, last.depth > depth {
            switch last.kind {
            case .array:
                open.removeLast()
                bytes.append(UInt8(ascii: "]"))
            case .object:
                finishPending(open.count - 1)
                let object = open.removeLast()
                if !object.sorted { reorder(object) }
                members.removeSubrange(object.firstMember...)
                bytes.append(UInt8(ascii: "}"))
            }
        }
    }

    /// Rewrites an object's members in byte-wise key order (what `.sortedKeys` produces).
    private func reorder(_ object: OpenContainer) {
        let sorted = members[object.firstMember...].sorted { bytes[$0.key].lexicographicallyPrecedes(bytes[$1.key]) }
        var region: [UInt8] = []
        region.reserveCapacity(bytes.count - object.start)
        region.append(UInt8(ascii: "{"))
        for (index, member) in sorted.enumerated() {
            if index > 0 { region.append(UInt8(ascii: ",")) }
            region.append(contentsOf: bytes[member.range])
        }
        bytes.replaceSubrange(object.start..<bytes.count, with: region)
    }

    /// Opens a container for an encoder at `depth`, or finds the one it already opened.
    func openContainer(_ kind: Kind, depth: Int) {
        close(above: depth)
        if let last = open.last, last.depth == depth, last.kind == kind { return }
        open.append(OpenContainer(kind: kind, depth: depth, start: bytes.count, firstMember: members.count))
        bytes.append(kind == .object ? UInt8(ascii: "{") : UInt8(ascii: "["))
    }

    /// Starts a member of the object at `depth`: closes deeper containers, writes the separator
    /// and the key.
    func beginMember(depth: Int, key: String) -> Member {
        close(above: depth)
        let object = index(of: depth)
        finishPending(object)
        if open[object].count > 0 { bytes.append(UInt8(ascii: ",")) }
        let start = bytes.count
        writeString(key)
        let keyEnd = bytes.count
        bytes.append(UInt8(ascii: ":"))
        return Member(start: start, keyEnd: keyEnd)
    }

    /// Records a finished member of the object at `depth`.
    func endMember(depth: Int, _ member: Member) {
        close(above: depth)
        record(member, in: index(of: depth))
    }

    /// Leaves a member open for a nested container or super encoder.
    func holdMember(depth: Int, _ member: Member) {
        open[index(of: depth)].pending = member
    }

    private func finishPending(_ object: Int) {
        guard let member = open[object].pending else { return }
        open[object].pending = nil
        record(member, in: object)
    }

    private func record(_ member: Member, in object: Int) {
        if bytes.count == member.keyEnd + 1 {
            // A super encoder that wrote nothing: an empty object, as with JSONEncoder.
            bytes.append(contentsOf: [UInt8(ascii: "{"), UInt8(ascii: "}")])
        }
        // Keys compare by their escaped bytes; for the keys that occur (no control characters,
        // quotes or backslashes) that is the order of the raw bytes.
        let key = (member.start + 1)..<(member.keyEnd - 1)
        if open[object].count > 0, let previous = members.last,
            !bytes[previous.key].lexicographicallyPrecedes(bytes[key])
        {
            open[object].sorted = false
        }
        members.append(MemberRecord(key: key, range: member.start..<bytes.count))
        open[object].count += 1
    }

    /// Starts an element of the array at `depth`; returns its index.
    func beginElement(depth: Int) {
        close(above: depth)
        let array = index(of: depth)
        if open[array].count > 0 { bytes.append(UInt8(ascii: ",")) }
        open[array].count += 1
    }

    /// How many elements the array at `depth` has.
    func count(depth: Int) -> Int { open[index(of: depth)].count }

    // MARK: Values

    /// Writes any encodable value for an encoder at `depth`.
    func writeValue<T: Encodable>(_ value: T, depth: Int) throws {
        if T.self == Data.self, let data = value as? Data {
            writeBase64(data)
        } else if T.self == Date.self, let date = value as? Date {
            writeISO8601(date)
        } else if T.self == URL.self, let url = value as? URL {
            writeString(url.absoluteString)
        } else if T.self == [String: String].self, let dictionary = value as? [String: String],
            writeStringDictionary(dictionary)
        {
            return
        } else if T.self == [String].self, let strings = value as? [String] {
            writeArray(strings) { writeString($0) }
        } else if T.self == [Int].self, let integers = value as? [Int] {
            writeArray(integers) { writeInteger($0) }
        } else {
            let start = bytes.count
            try value.encode(to: StreamingEncoder(sink: self, depth: depth))
            if bytes.count == start {
                // A value that encoded nothing is an empty object, as with JSONEncoder.
                bytes.append(contentsOf: [UInt8(ascii: "{"), UInt8(ascii: "}")])
            }
        }
    }

    /// Writes a string-to-string dictionary as an object with its keys in byte order, as the
    /// generic path would after re-ordering, without going through `Encodable`'s keyed
    /// containers. False (and nothing written) when a key needs escaping, whose escaped bytes
    /// could order differently: the generic path handles those.
    func writeStringDictionary(_ dictionary: [String: String]) -> Bool {
        for key in dictionary.keys where key.utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) {
            return false
        }
        bytes.append(UInt8(ascii: "{"))
        var first = true
        for (key, value) in dictionary.sorted(by: { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }) {
            if !first { bytes.append(UInt8(ascii: ",")) }
            first = false
            writeString(key)
            bytes.append(UInt8(ascii: ":"))
            writeString(value)
        }
        bytes.append(UInt8(ascii: "}"))
        return true
    }

    /// Writes an array, each element with `element`.
    func writeArray<Element>(_ elements: [Element], _ element: (Element) -> Void) {
        bytes.append(UInt8(ascii: "["))
        for (index, value) in elements.enumerated() {
            if index > 0 { bytes.append(UInt8(ascii: ",")) }
            element(value)
        }
        bytes.append(UInt8(ascii: "]"))
    }

    func writeNull() { bytes.append(contentsOf: [0x6E, 0x75, 0x6C, 0x6C]) }

    func writeBool(_ value: Bool) {
        if value {
            bytes.append(contentsOf: [0x74, 0x72, 0x75, 0x65])
        } else {
            bytes.append(contentsOf: [0x66, 0x61, 0x6C, 0x73, 0x65])
        }
    }

    func writeInteger<T: FixedWidthInteger>(_ value: T) {
        if value == 0 {
            bytes.append(UInt8(ascii: "0"))
            return
        }
        var magnitude = value.magnitude
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: enough for 20 digits
        var count = 0
        withUnsafeMutableBytes(of: &digits) { buffer in
            while magnitude > 0 {
                let (quotient, remainder) = magnitude.quotientAndRemainder(dividingBy: 10)
                buffer[23 - count] = UInt8(ascii: "0") + UInt8(truncatingIfNeeded: remainder)
                count += 1
                magnitude = quotient
            }
            if value < 0 { bytes.append(UInt8(ascii: "-")) }
            bytes.append(contentsOf: buffer[(24 - count)...])
        }
    }

    func writeFloatingPoint<T: BinaryFloatingPoint & LosslessStringConvertible>(_ value: T) throws {
        guard value.isFinite else {
            throw EncodingError.invalidValue(value, .init(codingPath: [], debugDescription: "Unable to encode \(value) directly in JSON."))
        }
        var text = value.description
        if text.hasSuffix(".0") { text.removeLast(2) }
        bytes.append(contentsOf: text.utf8)
    }

    private static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    func writeString(_ string: String) {
        bytes.append(UInt8(ascii: "\""))
        var string = string
        string.withUTF8 { utf8 in
            var clean = 0  // start of the run of bytes that need no escape
            for (index, byte) in utf8.enumerated() where byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
                bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[clean..<index]))
                clean = index + 1
                switch byte {
                case UInt8(ascii: "\""): bytes.append(contentsOf: [0x5C, 0x22])
                case UInt8(ascii: "\\"): bytes.append(contentsOf: [0x5C, 0x5C])
                case 0x08: bytes.append(contentsOf: [0x5C, UInt8(ascii: "b")])
                case 0x0C: bytes.append(contentsOf: [0x5C, UInt8(ascii: "f")])
                case 0x0A: bytes.append(contentsOf: [0x5C, UInt8(ascii: "n")])
                case 0x0D: bytes.append(contentsOf: [0x5C, UInt8(ascii: "r")])
                case 0x09: bytes.append(contentsOf: [0x5C, UInt8(ascii: "t")])
                default:
                    bytes.append(contentsOf: [0x5C, UInt8(ascii: "u"), 0x30, 0x30, Self.hex[Int(byte >> 4)], Self.hex[Int(byte & 0xF)]])
                }
            }
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[clean...]))
        }
        bytes.append(UInt8(ascii: "\""))
    }

    private static let base64: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    func writeBase64(_ data: Data) {
        let table = Self.base64
        let count = data.count
        let encoded = (count + 2) / 3 * 4
        let start = bytes.count
        // Grow once, then fill in place: appending byte by byte checked capacity per byte.
        bytes.append(contentsOf: repeatElement(UInt8(ascii: "="), count: encoded + 2))
        bytes.withUnsafeMutableBufferPointer { out in
            out[start] = UInt8(ascii: "\"")
            out[start + encoded + 1] = UInt8(ascii: "\"")
            var o = start + 1
            data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
                var index = 0
                while index + 3 <= count {
                    let chunk = UInt32(raw[index]) << 16 | UInt32(raw[index + 1]) << 8 | UInt32(raw[index + 2])
                    out[o] = table[Int(chunk >> 18 & 63)]
                    out[o + 1] = table[Int(chunk >> 12 & 63)]
                    out[o + 2] = table[Int(chunk >> 6 & 63)]
                    out[o + 3] = table[Int(chunk & 63)]
                    o += 4
                    index += 3
                }
                // The padding '=' are already in place.
                switch count - index {
                case 1:
                    let chunk = UInt32(raw[index]) << 16
                    out[o] = table[Int(chunk >> 18 & 63)]
                    out[o + 1] = table[Int(chunk >> 12 & 63)]
                case 2:
                    let chunk = UInt32(raw[index]) << 16 | UInt32(raw[index + 1]) << 8
                    out[o] = table[Int(chunk >> 18 & 63)]
                    out[o + 1] = table[Int(chunk >> 12 & 63)]
                    out[o + 2] = table[Int(chunk >> 6 & 63)]
                default:
                    break
                }
            }
        }
    }

    /// `yyyy-MM-ddTHH:mm:ssZ` in UTC, seconds rounded down, as `JSONEncoder`'s `.iso8601`.
    func writeISO8601(_ date: Date) {
        // Before the Gregorian reform Foundation's calendar is Julian, and after 9999 years need
        // more digits; leave those to Foundation.
        guard date.timeIntervalSince1970 >= -12_219_292_800, date.timeIntervalSince1970 < 253_402_300_800 else {
            writeString(Date.ISO8601FormatStyle().format(date))
            return
        }
        let seconds = Int64((date.timeIntervalSince1970).rounded(.down))
        let days = seconds >= 0 ? seconds / 86400 : (seconds - 86399) / 86400
        let secondOfDay = seconds - days * 86400
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        func digits(_ value: Int64, _ width: Int) {
            var divisor: Int64 = 1
            for _ in 1..<width { divisor *= 10 }
            var rest = value
            while divisor > 0 {
                bytes.append(UInt8(ascii: "0") + UInt8(truncatingIfNeeded: rest / divisor % 10))
                rest %= divisor
                divisor /= 10
            }
        }
        bytes.append(UInt8(ascii: "\""))
        digits(year, 4)
        bytes.append(UInt8(ascii: "-"))
        digits(month, 2)
        bytes.append(UInt8(ascii: "-"))
        digits(day, 2)
        bytes.append(UInt8(ascii: "T"))
        digits(secondOfDay / 3600, 2)
        bytes.append(UInt8(ascii: ":"))
        digits(secondOfDay / 60 % 60, 2)
        bytes.append(UInt8(ascii: ":"))
        digits(secondOfDay % 60, 2)
        bytes.append(contentsOf: [UInt8(ascii: "Z"), UInt8(ascii: "\"")])
    }
}
