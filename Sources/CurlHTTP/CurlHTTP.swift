#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneSystem

/// A small HTTP/1.1 client over libcurl for the daemons' own transports: etcd's gateway over
/// TCP and the container engine's API over a unix socket.
///
/// Every transfer of one ``CurlHTTP/Client`` runs on that client's own thread, driven by one
/// `curl_multi` handle, so no libcurl call ever blocks Swift's cooperative thread pool.
/// Connections are pooled and reused. Cancelling the calling task aborts the transfer.
public enum CurlHTTP {}

extension CurlHTTP {
    /// An HTTP method.
    public struct Method: Hashable, Sendable, CustomStringConvertible {
        /// The method's name on the wire.
        public let rawValue: String
        /// Makes a method from its name on the wire.
        public init(_ rawValue: String) { self.rawValue = rawValue }

        /// `GET`.
        public static let get = Method("GET")
        /// `HEAD`; the answer has no body.
        public static let head = Method("HEAD")
        /// `POST`.
        public static let post = Method("POST")
        /// `PUT`.
        public static let put = Method("PUT")
        /// `DELETE`.
        public static let delete = Method("DELETE")

        public var description: String { rawValue }
    }

    /// One header line.
    public struct Header: Hashable, Sendable {
        /// The field name, as sent or received.
        public var name: String
        /// The field value, without surrounding whitespace.
        public var value: String
        /// Makes a header.
        public init(_ name: String, _ value: String) {
            self.name = name
            self.value = value
        }
    }

    /// Client certificates and the CA to trust, for `https://` URLs.
    public struct TLS: Hashable, Sendable {
        /// PEM file of the CA to trust.
        public var caFile: String?
        /// PEM client certificate.
        public var certFile: String?
        /// PEM client key.
        public var keyFile: String?
        /// Makes a TLS configuration.
        public init(caFile: String? = nil, certFile: String? = nil, keyFile: String? = nil) {
            self.caFile = caFile
            self.certFile = certFile
            self.keyFile = keyFile
        }
    }

    /// What one exchange asks for.
    public struct Request: Sendable {
        /// The method.
        public var method: Method
        /// The full URL. With ``unixSocketPath`` the host part only fills the `Host` header,
        /// e.g. `http://localhost/v1.41/version`.
        public var url: String
        /// Headers to send besides libcurl's own (`Host`, `Content-Length`). `Expect:` is always
        /// sent empty, so bodies never wait for `100 Continue`.
        public var headers: [Header]
        /// The body; nil sends none (a `POST` then sends an empty body).
        public var body: Data?
        /// The deadline of the whole exchange, body included; nil for none (streams).
        public var timeout: Duration?
        /// The deadline of opening the connection.
        public var connectTimeout: Duration
        /// Speak to this unix socket instead of the URL's host and port
        /// (`CURLOPT_UNIX_SOCKET_PATH`).
        public var unixSocketPath: String?
        /// TLS files, for `https://` URLs.
        public var tls: TLS?

        /// Makes a request.
        public init(
            method: Method = .get, url: String, headers: [Header] = [], body: Data? = nil,
            timeout: Duration? = .seconds(30), connectTimeout: Duration = .seconds(5),
            unixSocketPath: String? = nil, tls: TLS? = nil
        ) {
            self.method = method
            self.url = url
            self.headers = headers
            self.body = body
            self.timeout = timeout
            self.connectTimeout = connectTimeout
            self.unixSocketPath = unixSocketPath
            self.tls = tls
        }
    }

    /// A finished exchange. Any status is a response; deciding what a status means is the
    /// caller's business.
    public struct Response: Sendable {
        /// The HTTP status code of the final answer.
        public var status: Int
        /// The final answer's headers, in the order received.
        public var headers: [Header]
        /// The body (for a stream: what was not delivered as chunks, i.e. the body of an
        /// answer whose status was not 2xx).
        public var body: Data

        /// Makes a response.
        public init(status: Int, headers: [Header] = [], body: Data = Data()) {
            self.status = status
            self.headers = headers
            self.body = body
        }

        /// The value of the first header called `name` (case-insensitive).
        public func header(_ name: String) -> String? {
            let wanted = name.lowercased()
            return headers.first { $0.name.lowercased() == wanted }?.value
        }

        /// Whether the status is 2xx.
        public var isSuccess: Bool { (200..<300).contains(status) }

        /// The answer's `Retry-After` as a number of seconds (its HTTP-date form is not read);
        /// nil without one.
        public var retryAfter: Duration? {
            guard let value = header("Retry-After"), let seconds = Int(value), seconds >= 0
            else { return nil }
            return .seconds(seconds)
        }
    }

    /// Counters of one client, for tests and benchmarks.
    public struct Statistics: Sendable, Hashable {
        /// Transfers that finished (successfully or not).
        public var transfers: Int
        /// New connections libcurl had to open (the rest reused a pooled connection).
        public var connectionsOpened: Int
        /// Makes statistics.
        public init(transfers: Int = 0, connectionsOpened: Int = 0) {
            self.transfers = transfers
            self.connectionsOpened = connectionsOpened
        }
    }
}

extension Duration {
    /// Whole milliseconds, rounded down, at least 1 for any positive duration.
    var curlMilliseconds: Int {
        let (seconds, attoseconds) = components
        let ms = Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000)
        return ms == 0 && self > .zero ? 1 : ms
    }
}
