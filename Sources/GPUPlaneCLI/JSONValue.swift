import Foundation

/// Any JSON document, as the CLI reads the api-server's answers: the kinds kept apart exactly
/// (a `true` is never a 1), numbers whole when they are.
public enum JSONValue: Codable, Sendable, Hashable {
    case null
    case bool(Bool)
    case integer(Int64)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .integer(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .integer(let value): try container.encode(value)
        case .number(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }

    /// Parses `data`; nil when it is not JSON.
    public static func parse(_ data: Data) -> JSONValue? { try? JSONDecoder().decode(JSONValue.self, from: data) }

    /// The member `key` of an object (`.null` otherwise).
    public subscript(_ key: String) -> JSONValue {
        if case .object(let members) = self { return members[key] ?? .null }
        return .null
    }

    /// The value at a dotted path, e.g. `status.phase`.
    public func at(_ path: String) -> JSONValue {
        path.split(separator: ".").reduce(self) { $0[String($1)] }
    }

    /// The elements of an array (empty otherwise).
    public var elements: [JSONValue] {
        if case .array(let values) = self { return values }
        return []
    }

    /// The text of a scalar as a table cell: `-` for null or missing, arrays comma-joined.
    public var cell: String {
        switch self {
        case .null: return "-"
        case .bool(let value): return value ? "true" : "false"
        case .integer(let value): return String(value)
        case .number(let value): return value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
        case .string(let value): return value.isEmpty ? "-" : value
        case .array(let values): return values.isEmpty ? "-" : values.map(\.cell).joined(separator: ",")
        case .object: return "{…}"
        }
    }

    /// The string of a `.string` (nil otherwise).
    public var string: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    /// The whole number of an `.integer`, or of a `.number` without a fraction (nil otherwise).
    public var int: Int? {
        switch self {
        case .integer(let value): return Int(exactly: value)
        case .number(let value) where value == value.rounded() && abs(value) < 1e15: return Int(value)
        default: return nil
        }
    }

    /// The value of a `.number` or `.integer` (nil otherwise).
    public var double: Double? {
        switch self {
        case .integer(let value): return Double(value)
        case .number(let value): return value
        default: return nil
        }
    }

    /// The value of a `.bool` (nil otherwise).
    public var bool: Bool? {
        if case .bool(let value) = self { return value }
        return nil
    }
}
