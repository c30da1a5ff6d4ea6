import Foundation
import GPUPlaneCore
import Hummingbird

/// JSON answers and request bodies.
enum HTTPJSON {
    /// A JSON response of `value` with sorted keys.
    static func response<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
        let data = try GPUPlaneJSON.encode(value)
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }

    /// An empty 204.
    static func noContent() -> Response { Response(status: .noContent) }

    /// The request body, at most `limit` bytes (413 beyond).
    static func body(_ request: Request, limit: Int = 2 << 20) async throws -> Data {
        var request = request
        do {
            let buffer = try await request.collectBody(upTo: limit)
            return Data(buffer.readableBytesView)
        } catch let error as HTTPResponseError where error.status == .contentTooLarge {
            throw APIError(.contentTooLarge, .tooLarge, "the body is larger than \(limit) bytes; a manifest may be at most 1 MiB")
        } catch is APIError {
            throw APIError(.contentTooLarge, .tooLarge, "the body is larger than \(limit) bytes")
        } catch {
            throw APIError(.badRequest, .badRequest, "could not read the body")
        }
    }

    /// Decodes a JSON body into `T`, naming the field at fault.
    static func decode<T: Decodable>(_ type: T.Type, from data: Data) throws -> T {
        try rejectDuplicateKeys(data)
        do {
            return try GPUPlaneJSON.decoder().decode(T.self, from: data)
        } catch let DecodingError.keyNotFound(key, context) {
            let path = (context.codingPath + [key]).map(\.stringValue).joined(separator: ".")
            throw APIError(.badRequest, .badRequest, "'\(path)' is required", field: path)
        } catch let DecodingError.typeMismatch(expected, context) {
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw APIError(.badRequest, .badRequest, "'\(path)' should be \(expected)", field: path)
        } catch let DecodingError.valueNotFound(_, context) {
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw APIError(.badRequest, .badRequest, "'\(path)' must not be null", field: path)
        } catch let DecodingError.dataCorrupted(context) {
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw APIError(.badRequest, .badRequest, path.isEmpty ? "the body is not valid JSON" : "'\(path)': \(context.debugDescription)", field: path.isEmpty ? nil : path)
        } catch {
            throw APIError(.badRequest, .badRequest, "the body is not valid JSON")
        }
    }

    /// Refuses keys of a JSON object body that are not in `known`, with a suggestion.
    static func rejectUnknownKeys(_ data: Data, known: [String], at path: String = "") throws {
        try rejectDuplicateKeys(data)
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return }
        for key in object.keys.sorted() where !known.contains(key) {
            let field = path.isEmpty ? key : "\(path).\(key)"
            throw APIError(
                .badRequest, .badRequest,
                "unknown field '\(field)'\(Suggest.hint(for: key, among: known)); known fields: \(known.joined(separator: ", "))",
                field: field)
        }
    }

    /// Refuses a JSON body in which one object names a key twice, at any depth (JSON decoders
    /// keep one of them silently), naming the key's path and both places, as the manifest
    /// reader does for YAML.
    static func rejectDuplicateKeys(_ data: Data) throws {
        guard let duplicate = JSONDuplicateKeys.first(in: data) else { return }
        throw APIError(
            .badRequest, .badRequest,
            "key '\(duplicate.key)' appears twice in one object (first at line \(duplicate.first.line), column \(duplicate.first.column)); keep one",
            field: duplicate.path, line: duplicate.line, column: duplicate.column)
    }
}

/// Finds the first key that appears twice in one object of a JSON text. A scan of the bytes,
/// not a parse: it never fails, and on text that is not JSON finds what it finds (the decoder
/// then refuses the text anyway).
enum JSONDuplicateKeys {
    struct Duplicate: Equatable {
        /// The key as decoded (escapes resolved).
        var key: String
        /// Its dotted path, `settings.min_instances`, `gpus[1].uuid`.
        var path: String
        /// Where the second one is (1-based).
        var line: Int
        var column: Int
        /// Where the first one is.
        var first: (line: Int, column: Int)

        static func == (a: Duplicate, b: Duplicate) -> Bool {
            a.key == b.key && a.path == b.path && a.line == b.line && a.column == b.column
                && a.first.line == b.first.line && a.first.column == b.first.column
        }
    }

    private final class Frame {
        let isObject: Bool
        let path: String
        var keys: [String: (line: Int, column: Int)] = [:]
        var key: String?
        var index = 0
        var expectingKey: Bool
        init(isObject: Bool, path: String) {
            self.isObject = isObject
            self.path = path
            self.expectingKey = isObject
        }
        /// The path of the value being read in this container.
        var childPath: String {
            if isObject {
                guard let key else { return path }
                return path.isEmpty ? key : "\(path).\(key)"
            }
            return "\(path)[\(index)]"
        }
    }

    static func first(in data: Data) -> Duplicate? {
        var stack: [Frame] = []
        var line = 1
        var lineStart = 0
        var i = 0
        return data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> Duplicate? in
            let bytes = raw.bindMemory(to: UInt8.self)
            let count = bytes.count
            while i < count {
                let byte = bytes[i]
                switch byte {
                case UInt8(ascii: "\n"):
                    line += 1
                    lineStart = i + 1
                    i += 1
                case UInt8(ascii: "{"), UInt8(ascii: "["):
                    let path = stack.last?.childPath ?? ""
                    stack.append(Frame(isObject: byte == UInt8(ascii: "{"), path: path))
                    i += 1
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    _ = stack.popLast()
                    i += 1
                case UInt8(ascii: ","):
                    if let top = stack.last {
                        if top.isObject { top.expectingKey = true } else { top.index += 1 }
                    }
                    i += 1
                case UInt8(ascii: ":"):
                    stack.last?.expectingKey = false
                    i += 1
                case UInt8(ascii: "\""):
                    let column = i - lineStart + 1
                    let (text, end) = string(bytes, from: i + 1)
                    i = end
                    guard let top = stack.last, top.isObject, top.expectingKey else { continue }
                    top.expectingKey = false
                    top.key = text
                    if let first = top.keys[text] {
                        return Duplicate(key: text, path: top.childPath, line: line, column: column, first: first)
                    }
                    top.keys[text] = (line, column)
                default:
                    i += 1
                }
            }
            return nil
        }
    }

    /// The string whose contents start at `start`, escapes resolved, and the index after its
    /// closing quote (or the end).
    private static func string(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int) -> (String, Int) {
        var utf8: [UInt8] = []
        var i = start
        func hex4(_ at: Int) -> UInt32? {
            guard at + 4 <= bytes.count else { return nil }
            var value: UInt32 = 0
            for k in at..<(at + 4) {
                let b = bytes[k]
                let digit: UInt32
                switch b {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(b - UInt8(ascii: "0"))
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(b - UInt8(ascii: "a") + 10)
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(b - UInt8(ascii: "A") + 10)
                default: return nil
                }
                value = value << 4 | digit
            }
            return value
        }
        func append(_ scalar: UInt32) {
            utf8.append(contentsOf: String(Unicode.Scalar(scalar).map(Character.init) ?? "\u{FFFD}").utf8)
        }
        while i < bytes.count {
            let b = bytes[i]
            if b == UInt8(ascii: "\"") { return (String(decoding: utf8, as: UTF8.self), i + 1) }
            if b != UInt8(ascii: "\\") {
                utf8.append(b)
                i += 1
                continue
            }
            guard i + 1 < bytes.count else { break }
            let escaped = bytes[i + 1]
            i += 2
            switch escaped {
            case UInt8(ascii: "b"): utf8.append(8)
            case UInt8(ascii: "f"): utf8.append(12)
            case UInt8(ascii: "n"): utf8.append(10)
            case UInt8(ascii: "r"): utf8.append(13)
            case UInt8(ascii: "t"): utf8.append(9)
            case UInt8(ascii: "u"):
                guard let unit = hex4(i) else { continue }
                i += 4
                if (0xD800..<0xDC00).contains(unit), i + 6 <= bytes.count, bytes[i] == UInt8(ascii: "\\"),
                    bytes[i + 1] == UInt8(ascii: "u"), let low = hex4(i + 2), (0xDC00..<0xE000).contains(low)
                {
                    i += 6
                    append(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))
                } else {
                    append(unit)
                }
            default: utf8.append(escaped)
            }
        }
        return (String(decoding: utf8, as: UTF8.self), bytes.count)
    }
}

/// A `resourceVersion` a client sends (`If-Match`, `?resourceVersion=`, a body field): one
/// parser for all of them, so a malformed one is a 400 naming the field, never a store error
/// and never silently no condition at all.
enum ResourceVersionParameter {
    /// `text` as an etcd revision: a whole number from 1 to 2^63-1, in canonical form (`007`
    /// is `7`); else 400 with field `resourceVersion`. `source` says where it came from.
    static func parse(_ text: String, source: String = "resourceVersion") throws -> String {
        let digits = text.utf8.allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }
        guard digits, let value = Int64(text), value > 0 else {
            let shown = text.count > 40 ? String(text.prefix(40)) + "…" : text
            throw APIError(
                .badRequest, .badRequest,
                "\(source) must be a whole number from 1 to \(Int64.max) (the resourceVersion of the object as last read), not '\(shown)'",
                field: "resourceVersion")
        }
        return String(value)
    }
}

extension Request {
    /// A query parameter.
    func query(_ name: String) -> String? { uri.queryParameters[Substring(name)].map(String.init) }

    /// Whether `?watch=true` (or `1`). Any other value than `true`, `false`, `1` or `0` was
    /// refused by ``QueryCheckMiddleware`` before the route ran.
    var wantsWatch: Bool { query("watch") == "true" || query("watch") == "1" }

    /// The version a conditional write asks for, from `If-Match` (bare or as a quoted entity
    /// tag) or `?resourceVersion=`, checked by ``ResourceVersionParameter``; nil when neither
    /// is given. Both at once must agree.
    func expectedVersion() throws -> String? {
        var header: String?
        if let text = headers[.ifMatch] {
            var tag = Substring(text.trimmingCharacters(in: .whitespaces))
            if tag.count >= 2, tag.hasPrefix("\""), tag.hasSuffix("\"") { tag = tag.dropFirst().dropLast() }
            header = try ResourceVersionParameter.parse(String(tag), source: "If-Match")
        }
        let query = try query("resourceVersion").map { try ResourceVersionParameter.parse($0, source: "?resourceVersion=") }
        if let header, let query, header != query {
            throw APIError(
                .badRequest, .badRequest, "If-Match (\(header)) and ?resourceVersion= (\(query)) disagree; send one",
                field: "resourceVersion")
        }
        return header ?? query
    }
}

/// Checks the query parameters every route shares before the route runs: `?watch=` must be
/// `true`, `false`, `1` or `0` (anything else was once taken silently as false). The inference
/// URLs are left alone: their queries belong to the model server.
struct QueryCheckMiddleware: RouterMiddleware {
    typealias Context = APIContext
    static let watchValues: Set<String> = ["true", "false", "1", "0"]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        try Self.check(request)
        return try await next(request, context)
    }

    /// Throws 400 for a `?watch=` value other than the four. Out of line: the handler's frame
    /// is allocated for every request.
    @inline(never)
    static func check(_ request: Request) throws {
        let path = request.uri.path
        if path.hasPrefix(InferenceEndpoint.pathPrefix) || path.hasPrefix("/v1/openai/") || path.hasPrefix(AppIngress.pathPrefix) { return }
        for value in request.uri.queryParameters[values: "watch"] where !watchValues.contains(String(value)) {
            throw APIError(
                .badRequest, .badRequest, "watch must be true or false (or 1 or 0), not '\(value)'", field: "watch")
        }
    }
}

extension APIContext {
    /// The tenant a request acts for where it needs a tenant's plan (creating or scaling a
    /// deployment, usage): as ``tenant(_:)``, but an admin token belongs to no tenant, so it
    /// must name one with `?tenant=`; without it, a 400 that says so (not the 403 "tenant
    /// '_cluster' has no plan" it once got).
    func planTenant(_ request: Request) throws -> String {
        let name = try tenant(request)
        if name == ObjectMeta.clusterTenant {
            throw APIError(
                .badRequest, .badRequest,
                "an admin token belongs to no tenant: add ?tenant=<name> to the URL to act for one (e.g. ?tenant=acme)",
                field: "tenant")
        }
        return name
    }

    /// A path parameter that the route guarantees.
    func parameter(_ name: String) throws -> String {
        guard let value = parameters.get(name) else {
            throw APIError(.badRequest, .badRequest, "missing path parameter \(name)")
        }
        return value
    }
}
