/// Rules for names, image references, ports and variables.
import GPUPlaneSystem
public enum Syntax {
    /// Whether `name` is an RFC 1123 DNS label: 1–63 of `a-z`, `0-9`, `-`, starting and ending
    /// with a letter or digit.
    public static func isDNSLabel(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard (1...63).contains(bytes.count) else { return false }
        func alnum(_ c: UInt8) -> Bool { (c >= 97 && c <= 122) || (c >= 48 && c <= 57) }
        guard let first = bytes.first, let last = bytes.last, alnum(first), alnum(last) else { return false }
        return bytes.allSatisfy { alnum($0) || $0 == 45 }
    }

    /// A DNS label made from `name`, to suggest in errors: lower case, other characters as `-`.
    public static func dnsLabelSuggestion(for name: String) -> String {
        var out = ""
        for ch in name.lowercased() {
            if ch.isASCII && (ch.isLetter || ch.isNumber) { out.append(ch) } else if !out.hasSuffix("-") { out.append("-") }
        }
        let trimmed = out.trimming("-")
        return String(trimmed.prefix(63)).trimming("-")
    }

    /// Whether `name` is a usable environment variable name.
    public static func isEnvName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, !name.isEmpty, name.utf8.count <= 256 else { return false }
        func ok(_ c: Unicode.Scalar) -> Bool {
            (c >= "A" && c <= "Z") || (c >= "a" && c <= "z") || (c >= "0" && c <= "9") || c == "_"
        }
        return !(first >= "0" && first <= "9") && name.unicodeScalars.allSatisfy(ok)
    }

    /// Whether `name` is a deployment's model_name: 1–64 of letters, digits, `.`, `_`, `-`,
    /// starting with a letter or digit.
    public static func isModelName(_ name: String) -> Bool {
        guard (1...64).contains(name.utf8.count), let first = name.unicodeScalars.first else { return false }
        func alnum(_ c: Unicode.Scalar) -> Bool {
            (c >= "A" && c <= "Z") || (c >= "a" && c <= "z") || (c >= "0" && c <= "9")
        }
        return alnum(first) && name.unicodeScalars.allSatisfy { alnum($0) || $0 == "." || $0 == "_" || $0 == "-" }
    }

    /// Whether `repo` is a Hugging Face `owner/name`.
    public static func isHuggingFaceRepo(_ repo: String) -> Bool {
        let parts = repo.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2 else { return false }
        return parts.allSatisfy { part in
            (1...96).contains(part.count) && part.first != "." && part.first != "-"
                && part.unicodeScalars.allSatisfy {
                    ($0 >= "A" && $0 <= "Z") || ($0 >= "a" && $0 <= "z") || ($0 >= "0" && $0 <= "9")
                        || $0 == "." || $0 == "_" || $0 == "-"
                }
        }
    }
}

/// A parsed container image reference: `[registry[:port]/]repository[:tag][@digest]`.
extension Syntax {
    /// Whether `text` has whitespace anywhere: bytes for ASCII text, Unicode's definition
    /// otherwise (a `Character` property lookup per character is slow on a hot path).
    static func containsWhitespace(_ text: String) -> Bool {
        if text.utf8.contains(where: { $0 >= 0x80 }) { return text.contains(where: { $0.isWhitespace }) }
        return text.utf8.contains { $0 == 0x20 || (0x09...0x0D).contains($0) }
    }
}

public struct ImageReference: Sendable, Hashable, CustomStringConvertible {
    /// The registry host (with port), when the reference names one.
    public var registry: String?
    /// The repository path, e.g. `myorg/chat-backend`.
    public var repository: String
    /// The tag, when given.
    public var tag: String?
    /// The digest (`sha256:…`), when given.
    public var digest: String?

    /// Why a reference does not parse.
    public struct ParseError: Error, Sendable, Hashable, CustomStringConvertible {
        /// What is wrong with it.
        public let description: String
    }

    /// Parses `reference` with the grammar of the distribution project.
    public init(parsing reference: String) throws {
        guard !reference.isEmpty else { throw ParseError(description: "the image reference is empty") }
        guard reference.utf8.count <= 512 else { throw ParseError(description: "the image reference is longer than 512 characters") }
        // Byte checks throughout: the grammar is ASCII, and `Character` properties cost a Unicode
        // table lookup each (they showed in the api-server's apply profile).
        guard !Syntax.containsWhitespace(reference) else {
            throw ParseError(description: "an image reference has no spaces")
        }
        var rest = Substring(reference)
        if let at = rest.firstIndex(of: "@") {
            let digest = String(rest[rest.index(after: at)...])
            let parts = digest.split(separator: ":", maxSplits: 1)
            guard parts.count == 2, !parts[0].isEmpty,
                parts[1].utf8.count >= 32, parts[1].utf8.allSatisfy({ isDigit($0) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0) })
            else { throw ParseError(description: "digest '\(digest)' is not of the form sha256:<hex>") }
            self.digest = digest
            rest = rest[..<at]
        } else {
            digest = nil
        }
        // A tag is after the last ':' that comes after the last '/'.
        let lastSlash = rest.lastIndex(of: "/")
        if let colon = rest.lastIndex(of: ":"), lastSlash.map({ colon > $0 }) ?? true {
            let tag = String(rest[rest.index(after: colon)...])
            guard ImageReference.isTag(tag) else {
                throw ParseError(description: "tag '\(tag)' must be 1–128 of letters, digits, '_', '.', '-', not starting with '.' or '-'")
            }
            self.tag = tag
            rest = rest[..<colon]
        } else {
            tag = nil
        }
        var components = rest.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        if components.count > 1, let first = components.first,
            first.contains(".") || first.contains(":") || first == "localhost"
        {
            guard ImageReference.isHost(first) else { throw ParseError(description: "registry '\(first)' is not a host[:port]") }
            registry = first
            components.removeFirst()
        } else {
            registry = nil
        }
        for component in components where !ImageReference.isPathComponent(component) {
            throw ParseError(description: "'\(component)' in the repository path must be lower-case letters and digits, separated by '.', '_', '__' or '-'")
        }
        repository = components.joined(separator: "/")
    }

    public var description: String {
        var out = registry.map { $0 + "/" } ?? ""
        out += repository
        if let tag { out += ":" + tag }
        if let digest { out += "@" + digest }
        return out
    }

    private static func isTag(_ tag: String) -> Bool {
        let bytes = tag.utf8
        guard (1...128).contains(bytes.count), let first = bytes.first, first != UInt8(ascii: "."), first != UInt8(ascii: "-")
        else { return false }
        return bytes.allSatisfy { isLetter($0) || isDigit($0) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") }
    }

    private static func isHost(_ host: String) -> Bool {
        let parts = host.split(separator: ":", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), !parts[0].isEmpty else { return false }
        if parts.count == 2 { guard let port = Int(parts[1]), (1...65535).contains(port) else { return false } }
        return parts[0].utf8.allSatisfy { isLetter($0) || isDigit($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") }
    }

    private static func isPathComponent(_ component: String) -> Bool {
        let bytes = component.utf8
        guard let first = bytes.first, let last = bytes.last else { return false }
        func alnum(_ c: UInt8) -> Bool { (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(c) || isDigit(c) }
        guard alnum(first), alnum(last) else { return false }
        var previousSeparator = false
        for c in bytes {
            if alnum(c) {
                previousSeparator = false
            } else if c == UInt8(ascii: ".") || c == UInt8(ascii: "_") || c == UInt8(ascii: "-") {
                if previousSeparator && !(c == UInt8(ascii: "_") || c == UInt8(ascii: "-")) { return false }
                previousSeparator = true
            } else {
                return false
            }
        }
        return true
    }
}

/// An ASCII letter.
private func isLetter(_ byte: UInt8) -> Bool {
    (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
}

/// An ASCII digit.
private func isDigit(_ byte: UInt8) -> Bool { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) }
