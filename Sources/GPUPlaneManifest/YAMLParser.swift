import CYAML
import Foundation
import GPUPlaneCore

/// Limits that keep hostile documents cheap to refuse.
public struct ManifestLimits: Sendable {
    /// The largest document accepted, in bytes (1 MiB).
    public var maxBytes: Int
    /// The deepest nesting of mappings and lists.
    public var maxDepth: Int
    /// The most nodes a file may expand to, aliases counted at their full size.
    public var maxNodes: Int

    /// The defaults: 1 MiB, depth 64, 100,000 nodes.
    public static let standard = ManifestLimits(maxBytes: 1 << 20, maxDepth: 64, maxNodes: 100_000)

    /// Makes limits.
    public init(maxBytes: Int, maxDepth: Int, maxNodes: Int) {
        self.maxBytes = maxBytes
        self.maxDepth = maxDepth
        self.maxNodes = maxNodes
    }
}

/// Why a document could not be read as YAML.
public struct YAMLError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Which limit or rule was broken.
    public var code: DiagnosticCode
    /// What is wrong.
    public var message: String
    /// Where, when known.
    public var mark: Mark?

    public var description: String { (mark.map { "\($0): " } ?? "") + message }
}

/// Reads YAML 1.1 (and so JSON) into `YAMLNode` trees with libyaml's event parser,
/// one tree per document, refusing oversize input, deep nesting, alias bombs, invalid UTF-8 and
/// duplicate keys.
public struct YAMLParser: Sendable {
    /// The limits applied.
    public var limits: ManifestLimits

    /// Makes a parser.
    public init(limits: ManifestLimits = .standard) { self.limits = limits }

    /// Parses every document of `data`.
    public func parse(_ data: Data) throws(YAMLError) -> [YAMLNode] {
        guard data.count <= limits.maxBytes else {
            throw YAMLError(
                code: .documentTooLarge,
                message: "the document is \(data.count) bytes; the limit is \(limits.maxBytes) bytes (1 MiB): split it into several files",
                mark: nil)
        }
        if let bad = YAMLParser.firstInvalidUTF8(data) {
            throw YAMLError(
                code: .invalidEncoding,
                message: "invalid UTF-8 (byte 0x\(String(bad.byte, radix: 16))); manifests must be UTF-8 text",
                mark: bad.mark)
        }
        var parser = yaml_parser_t()
        guard yaml_parser_initialize(&parser) == 1 else {
            throw YAMLError(code: .syntax, message: "the YAML parser could not start (out of memory)", mark: nil)
        }
        defer { yaml_parser_delete(&parser) }
        let bytes = [UInt8](data)
        return try bytes.withUnsafeBufferPointer { (buffer) throws(YAMLError) -> [YAMLNode] in
            yaml_parser_set_input_string(&parser, buffer.baseAddress, buffer.count)
            var builder = TreeBuilder(limits: limits)
            while true {
                var event = yaml_event_t()
                guard yaml_parser_parse(&parser, &event) == 1 else {
                    throw YAMLParser.error(from: parser)
                }
                defer { yaml_event_delete(&event) }
                if event.type == YAML_STREAM_END_EVENT { break }
                try builder.handle(event)
            }
            return builder.documents
        }
    }

    private static func error(from parser: yaml_parser_t) -> YAMLError {
        let problem = parser.problem.map { String(cString: $0) } ?? "unreadable YAML"
        let context = parser.context.map { String(cString: $0) }
        let mark = Mark(line: Int(parser.problem_mark.line) + 1, column: Int(parser.problem_mark.column) + 1)
        var message = problem
        if let context { message = "\(context): \(problem)" }
        if problem.contains("tab") || problem.contains("found character that cannot start any token") {
            message += " (indent with spaces, not tabs)"
        }
        return YAMLError(code: .syntax, message: message, mark: mark)
    }

    /// The first byte that is not valid UTF-8, with its position.
    static func firstInvalidUTF8(_ data: Data) -> (byte: UInt8, mark: Mark)? {
        // Almost every manifest is valid: the standard library's validation answers that in one
        // fast pass; only a bad one is walked byte by byte to find the position.
        let valid = data.withUnsafeBytes { String(validating: $0, as: UTF8.self) != nil }
        if valid { return nil }
        var line = 1, column = 1
        var i = data.startIndex
        while i < data.endIndex {
            let b = data[i]
            var length = 0
            if b < 0x80 { length = 1 } else if b & 0xE0 == 0xC0, b >= 0xC2 { length = 2 } else if b & 0xF0 == 0xE0 { length = 3 } else if b & 0xF8 == 0xF0, b <= 0xF4 { length = 4 }
            guard length > 0, data.endIndex - i >= length else { return (b, Mark(line: line, column: column)) }
            if length > 1 {
                let scalarBytes = data[i..<(i + length)]
                if String(data: scalarBytes, encoding: .utf8) == nil { return (b, Mark(line: line, column: column)) }
            }
            if b == 0x0A { line += 1; column = 1 } else { column += 1 }
            i += length
        }
        return nil
    }
}

/// Turns the event stream into trees, enforcing depth, node budget and unique keys.
private struct TreeBuilder {
    /// An open mapping or list; a class so appends happen in place.
    final class Frame {
        let isMapping: Bool
        let mark: Mark
        let anchor: String?
        var pairs: [(key: YAMLNode, value: YAMLNode)] = []
        var items: [YAMLNode] = []
        /// Keys seen so far, for duplicate detection: a short list searched in order (mappings in
        /// manifests are small, and hashing each key showed in the apply profile), moved into a
        /// dictionary once a mapping grows past 16 keys.
        var keyList: [(String, Mark)] = []
        var keyIndex: [String: Mark]?

        /// Where `key` was first seen in this mapping, recording it if it is new.
        func firstMark(of key: String, at mark: Mark) -> Mark? {
            if var index = keyIndex {
                if let first = index[key] { return first }
                index[key] = mark
                keyIndex = index
                return nil
            }
            if let first = keyList.first(where: { $0.0 == key }) { return first.1 }
            keyList.append((key, mark))
            if keyList.count > 16 {
                keyIndex = Dictionary(keyList, uniquingKeysWith: { first, _ in first })
                keyList = []
            }
            return nil
        }
        var pendingKey: YAMLNode?
        var size = 1

        init(isMapping: Bool, mark: Mark, anchor: String?) {
            self.isMapping = isMapping
            self.mark = mark
            self.anchor = anchor
        }

        var node: YAMLNode { isMapping ? .mapping(pairs, mark) : .sequence(items, mark) }
    }

    let limits: ManifestLimits
    var documents: [YAMLNode] = []
    var stack: [Frame] = []
    var anchors: [String: (node: YAMLNode, size: Int)] = [:]
    var nodes = 0
    var root: YAMLNode?

    init(limits: ManifestLimits) { self.limits = limits }

    mutating func handle(_ event: yaml_event_t) throws(YAMLError) {
        let mark = Mark(line: Int(event.start_mark.line) + 1, column: Int(event.start_mark.column) + 1)
        switch event.type {
        case YAML_DOCUMENT_START_EVENT:
            root = nil
            anchors = [:]
        case YAML_DOCUMENT_END_EVENT:
            documents.append(root ?? .scalar("", plain: true, mark))
        case YAML_SCALAR_EVENT:
            let scalar = event.data.scalar
            let text = scalar.value.map { String(decoding: UnsafeBufferPointer(start: $0, count: Int(scalar.length)), as: UTF8.self) } ?? ""
            let node = YAMLNode.scalar(text, plain: scalar.style == YAML_PLAIN_SCALAR_STYLE, mark)
            try count(1, at: mark)
            if let anchor = TreeBuilder.string(scalar.anchor) { anchors[anchor] = (node, 1) }
            try add(node, size: 1)
        case YAML_ALIAS_EVENT:
            let name = TreeBuilder.string(event.data.alias.anchor) ?? ""
            guard let (node, size) = anchors[name] else {
                throw YAMLError(code: .syntax, message: "alias *\(name) names no anchor defined before it", mark: mark)
            }
            try count(size, at: mark)
            try add(node, size: size)
        case YAML_MAPPING_START_EVENT:
            try push(Frame(isMapping: true, mark: mark, anchor: TreeBuilder.string(event.data.mapping_start.anchor)))
        case YAML_SEQUENCE_START_EVENT:
            try push(Frame(isMapping: false, mark: mark, anchor: TreeBuilder.string(event.data.sequence_start.anchor)))
        case YAML_MAPPING_END_EVENT, YAML_SEQUENCE_END_EVENT:
            guard let frame = stack.popLast() else { return }
            let node = frame.node
            if let anchor = frame.anchor { anchors[anchor] = (node, frame.size) }
            try add(node, size: frame.size)
        default:
            break
        }
    }

    private mutating func push(_ frame: Frame) throws(YAMLError) {
        guard stack.count < limits.maxDepth else {
            throw YAMLError(
                code: .tooDeep,
                message: "nesting is deeper than \(limits.maxDepth) levels; flatten the document",
                mark: frame.mark)
        }
        try count(1, at: frame.mark)
        stack.append(frame)
    }

    private mutating func count(_ n: Int, at mark: Mark) throws(YAMLError) {
        nodes += n
        guard nodes <= limits.maxNodes else {
            throw YAMLError(
                code: .aliasExpansion,
                message: "the document expands to more than \(limits.maxNodes) nodes (aliases counted in full); this looks like an alias bomb",
                mark: mark)
        }
    }

    private mutating func add(_ node: YAMLNode, size: Int) throws(YAMLError) {
        guard let top = stack.last else {
            root = node
            return
        }
        top.size += size
        guard top.isMapping else {
            top.items.append(node)
            return
        }
        if let key = top.pendingKey {
            top.pairs.append((key, node))
            top.pendingKey = nil
            return
        }
        if case .scalar(let text, _, let keyMark) = node {
            if let first = top.firstMark(of: text, at: keyMark) {
                throw YAMLError(
                    code: .syntax,
                    message: "key '\(text)' appears twice in one mapping (first at line \(first.line)); keep one",
                    mark: keyMark)
            }
        }
        top.pendingKey = node
    }

    private static func string(_ pointer: UnsafeMutablePointer<yaml_char_t>?) -> String? {
        pointer.map { String(cString: UnsafePointer($0)) }
    }
}
