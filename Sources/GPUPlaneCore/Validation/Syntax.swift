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
        guard !reference.contains(where: { $0.isWhitespace }) else {
            throw ParseError(description: "an image reference has no spaces")
        }
        var rest = Substring(reference)
        if let at = rest.firstIndex(of: "@") {
            let digest = String(rest[rest.index(after: at)...])
            let parts = digest.split(separator: ":", maxSplits: 1)
            guard parts.count == 2, !parts[0].isEmpty,
                parts[1].count >= 32, parts[1].allSatisfy({ $0.isHexDigit && !$0.isUppercase })
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
        guard (1...128).contains(tag.count), let first = tag.first, first != ".", first != "-" else { return false }
        return tag.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "." || $0 == "-") }
    }

    private static func isHost(_ host: String) -> Bool {
        let parts = host.split(separator: ":", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), !parts[0].isEmpty else { return false }
        if parts.count == 2 { guard let port = Int(parts[1]), (1...65535).contains(port) else { return false } }
        return parts[0].allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "-") }
    }

    private static func isPathComponent(_ component: String) -> Bool {
        guard let first = component.first, let last = component.last else { return false }
        func alnum(_ c: Character) -> Bool { c.isASCII && (c.isLowercase || c.isNumber) }
        guard alnum(first), alnum(last) else { return false }
        var previousSeparator = false
        for c in component {
            if alnum(c) {
                previousSeparator = false
            } else if c == "." || c == "_" || c == "-" {
                if previousSeparator && !(c == "_" || c == "-") { return false }
                previousSeparator = true
            } else {
                return false
            }
        }
        return true
    }
}
