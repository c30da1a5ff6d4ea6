import GPUPlaneCore

/// Collects findings and the position of every field read, so findings raised later by the
/// core's validators (which know only dotted paths) get a line and column too.
final class ReadContext {
    var diagnostics: [Diagnostic] = []
    var marks: [String: Mark] = [:]
    /// Whether ``record(_:_:)`` keeps positions. A first read of a manifest keeps none (they
    /// are only needed to place findings); one with findings is read again keeping them.
    let recordsMarks: Bool

    init(recordsMarks: Bool = true) { self.recordsMarks = recordsMarks }

    /// Remembers where `path` is in the source (the path is only built when kept).
    func record(_ path: @autoclosure () -> FieldPath, _ mark: Mark) {
        if recordsMarks { marks[path().description] = mark }
    }

    func error(_ code: DiagnosticCode, _ path: FieldPath, _ mark: Mark, _ message: String) {
        var diagnostic = Diagnostic(code, path: path.description, message)
        diagnostic.line = mark.line
        diagnostic.column = mark.column
        diagnostics.append(diagnostic)
    }

    /// The closest recorded position for `path`: the field itself, else its nearest parent.
    func mark(for path: String) -> Mark? {
        var candidate = path
        while true {
            if let mark = marks[candidate] { return mark }
            guard let cut = candidate.lastIndex(where: { $0 == "." || $0 == "[" }) else { return nil }
            candidate = String(candidate[..<cut])
        }
    }
}

/// Reads the fields of one mapping, remembering which keys were consumed so the rest can be
/// reported as unknown with a suggestion.
struct MappingReader {
    let pairs: [(key: YAMLNode, value: YAMLNode)]
    let path: FieldPath
    let mark: Mark
    let context: ReadContext
    /// The pairs read so far, by index: bits for the first 64, a set beyond.
    private var consumedMask: UInt64 = 0
    private var consumedBeyond: Set<Int> = []

    /// A reader for `node`, or nil after reporting that it is not a mapping.
    init?(_ node: YAMLNode, at path: FieldPath, context: ReadContext, what: String) {
        guard case .mapping(let pairs, let mark) = node else {
            context.error(.typeMismatch, path, node.mark, "expected \(what) (a mapping of key: value), got \(node.typeName)")
            return nil
        }
        self.pairs = pairs
        self.path = path
        self.mark = mark
        self.context = context
        context.record(path, mark)
    }

    /// The keys present, in order.
    var keys: [String] { pairs.compactMap { if case .scalar(let k, _, _) = $0.key { return k }; return nil } }

    /// The value of `key`, marking it consumed.
    mutating func value(_ key: String) -> YAMLNode? {
        guard let index = pairs.firstIndex(where: { if case .scalar(let k, _, _) = $0.key { return k == key }; return false }) else {
            return nil
        }
        if index < 64 { consumedMask |= 1 << UInt64(index) } else { consumedBeyond.insert(index) }
        let pair = pairs[index]
        context.record(path[key], pair.value.mark)
        if case .scalar(let text, let plain, _) = pair.value, plain, YAMLNode.isNull(text) { return nil }
        return pair.value
    }

    /// Reports a missing required field.
    func missing(_ key: String, _ hint: String) {
        context.error(.missingField, path[key], mark, "'\(key)' is required; \(hint)")
    }

    mutating func string(_ key: String, required hint: String? = nil) -> String? {
        guard let node = value(key) else {
            if let hint { missing(key, hint) }
            return nil
        }
        return Scalars.string(node, at: path[key], context: context)
    }

    mutating func int(_ key: String, required hint: String? = nil) -> Int? {
        guard let node = value(key) else {
            if let hint { missing(key, hint) }
            return nil
        }
        return Scalars.int(node, at: path[key], context: context)
    }

    mutating func double(_ key: String) -> Double? {
        guard let node = value(key) else { return nil }
        guard case .scalar(let text, true, _) = node, let value = Double(text), value.isFinite else {
            context.error(.typeMismatch, path[key], node.mark, "expected a number, got \(node.typeName)")
            return nil
        }
        return value
    }

    mutating func bool(_ key: String) -> Bool? {
        guard let node = value(key) else { return nil }
        guard case .scalar(let text, true, _) = node, let value = YAMLNode.bool(text) else {
            context.error(.typeMismatch, path[key], node.mark, "expected true or false, got \(Scalars.describe(node))")
            return nil
        }
        return value
    }

    /// A string or a list of strings.
    mutating func stringList(_ key: String) -> [String]? {
        guard let node = value(key) else { return nil }
        if case .sequence(let items, _) = node {
            return items.enumerated().compactMap { Scalars.string($1, at: path[key][$0], context: context) }
        }
        return Scalars.string(node, at: path[key], context: context).map { [$0] }
    }

    /// Reports every key not consumed: antipatterns with their own message, the rest as unknown
    /// fields with a "did you mean".
    func finish(known: [String], antipatterns: (String, YAMLNode) -> Diagnostic? = { _, _ in nil }) {
        for (index, pair) in pairs.enumerated() {
            guard case .scalar(let key, _, let keyMark) = pair.key else {
                context.error(.typeMismatch, path, pair.key.mark, "keys must be plain strings, got \(pair.key.typeName)")
                continue
            }
            let consumed = index < 64 ? consumedMask & (1 << UInt64(index)) != 0 : consumedBeyond.contains(index)
            guard !consumed else { continue }
            if var diagnostic = antipatterns(key, pair.value) {
                diagnostic.line = keyMark.line
                diagnostic.column = keyMark.column
                context.diagnostics.append(diagnostic)
                continue
            }
            context.error(
                .unknownField, path[key], keyMark,
                "unknown field '\(key)'\(Suggest.hint(for: key, among: known)); known fields here: \(known.joined(separator: ", "))")
        }
    }
}

/// Scalar conversions with errors that name what was expected.
enum Scalars {
    static func describe(_ node: YAMLNode) -> String {
        if case .scalar(let text, _, _) = node { return "'\(text.prefix(40))'" }
        return node.typeName
    }

    /// Any scalar as text (numbers and booleans keep their spelling).
    static func string(_ node: YAMLNode, at path: @autoclosure () -> FieldPath, context: ReadContext) -> String? {
        context.record(path(), node.mark)
        guard case .scalar(let text, _, _) = node else {
            context.error(.typeMismatch, path(), node.mark, "expected a string, got \(node.typeName)")
            return nil
        }
        return text
    }

    static func int(_ node: YAMLNode, at path: @autoclosure () -> FieldPath, context: ReadContext) -> Int? {
        context.record(path(), node.mark)
        guard case .scalar(let text, let plain, _) = node, plain, let value = Int(text) else {
            let got = describe(node)
            var message = "expected a whole number, got \(got)"
            if case .scalar(let text, false, _) = node, Int(text) != nil { message += "; remove the quotes" }
            context.error(.typeMismatch, path(), node.mark, message)
            return nil
        }
        return value
    }
}
