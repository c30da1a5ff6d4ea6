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
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return }
        for key in object.keys.sorted() where !known.contains(key) {
            let field = path.isEmpty ? key : "\(path).\(key)"
            throw APIError(
                .badRequest, .badRequest,
                "unknown field '\(field)'\(Suggest.hint(for: key, among: known)); known fields: \(known.joined(separator: ", "))",
                field: field)
        }
    }
}

extension Request {
    /// A query parameter.
    func query(_ name: String) -> String? { uri.queryParameters[Substring(name)].map(String.init) }

    /// Whether `?watch=true`.
    var wantsWatch: Bool { query("watch") == "true" || query("watch") == "1" }
}

extension APIContext {
    /// A path parameter that the route guarantees.
    func parameter(_ name: String) throws -> String {
        guard let value = parameters.get(name) else {
            throw APIError(.badRequest, .badRequest, "missing path parameter \(name)")
        }
        return value
    }
}
