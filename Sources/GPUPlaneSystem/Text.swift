/// Text helpers that daemons need without Foundation's internationalization (which would
/// put ICU's data and code in every resident set).
extension StringProtocol {
    /// The text without leading and trailing spaces, tabs, carriage returns and newlines.
    ///
    /// Works on the UTF-8 bytes (those four are single ASCII bytes, never part of a longer
    /// sequence): walking `Character`s costs grapheme breaking and Unicode property lookups,
    /// which showed up in profiles of the api-server, where every request's bearer token is
    /// trimmed.
    public func trimmingWhitespace() -> String {
        let bytes = Substring(self).utf8
        let isSpace: (UInt8) -> Bool = { $0 == 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D }
        guard let first = bytes.firstIndex(where: { !isSpace($0) }), let last = bytes.lastIndex(where: { !isSpace($0) }) else {
            return ""
        }
        return String(decoding: bytes[first...last], as: UTF8.self)
    }

    /// The text without leading and trailing `character`s.
    public func trimming(_ character: Character) -> String {
        guard let first = firstIndex(where: { $0 != character }), let last = lastIndex(where: { $0 != character }) else {
            return ""
        }
        return String(self[first...last])
    }

    /// The text with every occurrence of `target` replaced by `replacement`.
    public func replacingAll(_ target: Character, with replacement: String) -> String {
        var out = ""
        out.reserveCapacity(utf8.count)
        for character in self {
            if character == target { out += replacement } else { out.append(character) }
        }
        return out
    }

    /// Percent-encodes every byte except ASCII letters, digits and the bytes of `unreserved`
    /// (RFC 3986 style, upper-case hex), for path segments and query values.
    public func percentEncoded(keeping unreserved: String = "-._~") -> String {
        let keep = Set(unreserved.utf8)
        let hex = Array("0123456789ABCDEF".utf8)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(utf8.count)
        for byte in utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"):
                bytes.append(byte)
            case _ where keep.contains(byte):
                bytes.append(byte)
            default:
                bytes.append(UInt8(ascii: "%"))
                bytes.append(hex[Int(byte >> 4)])
                bytes.append(hex[Int(byte & 0x0F)])
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
