import ArgumentParser
import Foundation

/// How `get` prints: kubectl's `-o table|json|yaml`.
public enum OutputFormat: String, ExpressibleByArgument, Sendable {
    case table, json, yaml
}

/// Rendering of API objects as tables, JSON and YAML.
public enum Output {
    /// Rows as aligned columns, two spaces apart; the last column is not padded.
    public static func table(_ rows: [[String]]) -> [String] {
        guard let width = rows.map(\.count).max() else { return [] }
        let widths = (0..<width).map { column in rows.map { column < $0.count ? $0[column].count : 0 }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { i, cell in i == row.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
                .joined(separator: "  ")
        }
    }

    /// A value as pretty JSON with sorted keys.
    public static func json(_ value: JSONValue) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? "null"
    }

    /// A value as block YAML with sorted keys; strings are quoted whenever YAML could read them
    /// as something else.
    public static func yaml(_ value: JSONValue) -> String {
        var lines: [String] = []
        emit(value, indent: "", into: &lines)
        return lines.joined(separator: "\n")
    }

    private static func emit(_ value: JSONValue, indent: String, into lines: inout [String]) {
        switch value {
        case .object(let members) where !members.isEmpty:
            for (key, child) in members.sorted(by: { $0.key < $1.key }) {
                if let inline = inline(child) {
                    lines.append("\(indent)\(scalar(key)): \(inline)")
                } else {
                    lines.append("\(indent)\(scalar(key)):")
                    emit(child, indent: indent + "  ", into: &lines)
                }
            }
        case .array(let elements) where !elements.isEmpty:
            for element in elements {
                if let inline = inline(element) {
                    lines.append("\(indent)- \(inline)")
                    continue
                }
                var nested: [String] = []
                emit(element, indent: indent + "  ", into: &nested)
                // The element's first line goes right after the dash.
                if let first = nested.first {
                    lines.append(indent + "- " + first.dropFirst(indent.count + 2))
                    lines.append(contentsOf: nested.dropFirst())
                }
            }
        default:
            lines.append(indent + (inline(value) ?? ""))
        }
    }

    /// A scalar or empty collection on one line; nil for what needs a block.
    private static func inline(_ value: JSONValue) -> String? {
        switch value {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .integer(let n): return String(n)
        case .number(let n): return String(n)
        case .string(let s): return scalar(s)
        case .array(let a): return a.isEmpty ? "[]" : nil
        case .object(let o): return o.isEmpty ? "{}" : nil
        }
    }

    /// A string as a YAML scalar: plain when it cannot be misread, else double-quoted.
    static func scalar(_ text: String) -> String {
        let reserved: Set<String> = [
            "", "~", "null", "Null", "NULL", "true", "True", "TRUE", "false", "False", "FALSE", "yes", "Yes", "no", "No",
            "on", "On", "off", "Off", "y", "n",
        ]
        let special = CharacterSet(charactersIn: ":#{}[],&*!|>'\"%@`\n\r\t\\")
        let needsQuotes =
            reserved.contains(text) || text.rangeOfCharacter(from: special) != nil || text.first == " " || text.last == " "
            || text.first == "-" || text.first == "?" || Double(text) != nil
        guard needsQuotes else { return text }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        return (try? encoder.encode(text)).map { String(decoding: $0, as: UTF8.self) } ?? "\"\""
    }
}
