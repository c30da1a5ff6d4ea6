/// A position in a document: 1-based line and column.
public struct Mark: Sendable, Hashable, CustomStringConvertible {
    /// 1-based line.
    public var line: Int
    /// 1-based column.
    public var column: Int

    /// Makes a mark.
    public init(line: Int, column: Int) {
        self.line = line
        self.column = column
    }

    public var description: String { "\(line):\(column)" }
}

/// A YAML (or JSON) node with the position it started at.
public indirect enum YAMLNode: Sendable {
    /// A scalar's text, whether it was plain (unquoted), and where it started.
    case scalar(String, plain: Bool, Mark)
    /// Key/value pairs in document order.
    case mapping([(key: YAMLNode, value: YAMLNode)], Mark)
    /// Elements in order.
    case sequence([YAMLNode], Mark)

    /// Where the node starts.
    public var mark: Mark {
        switch self {
        case .scalar(_, _, let mark), .mapping(_, let mark), .sequence(_, let mark): return mark
        }
    }

    /// A short name of the node's type for error messages.
    public var typeName: String {
        switch self {
        case .scalar(let text, let plain, _):
            if plain && YAMLNode.isNull(text) { return "null" }
            if plain && YAMLNode.bool(text) != nil { return "a boolean" }
            if plain && Int(text) != nil { return "a number" }
            return "a string"
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        }
    }

    /// YAML's plain null spellings.
    static func isNull(_ text: String) -> Bool { text == "" || text == "~" || text == "null" || text == "Null" || text == "NULL" }

    /// YAML's plain boolean spellings (1.2 core schema plus 1.1's yes/no/on/off).
    static func bool(_ text: String) -> Bool? {
        switch text {
        case "true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON": return true
        case "false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF": return false
        default: return nil
        }
    }
}
