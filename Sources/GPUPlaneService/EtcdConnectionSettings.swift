#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// How a daemon reaches etcd: its members' URLs, TLS files for `https://` members (a CA to
/// trust, a client certificate and key for etcd's `--client-cert-auth`) and etcd's own user and
/// password. Declared once here for every daemon that talks to etcd (the api-server and the
/// scheduler), read and checked by ``init(_:)``.
public struct EtcdConnectionSettings: Sendable, Hashable {
    /// The members' client URLs.
    public var endpoints: [String]
    /// PEM file of the CA that signed the members' certificates (nil: the system's CAs).
    public var caFile: String?
    /// PEM client certificate, presented to members that ask for one.
    public var certFile: String?
    /// Its PEM key.
    public var keyFile: String?
    /// etcd user and password (`POST /v3/auth/authenticate`), when etcd auth is on.
    public var credentials: Credentials?

    /// An etcd user and its password; the password never appears in descriptions.
    public struct Credentials: Sendable, Hashable, CustomStringConvertible {
        /// The user.
        public var user: String
        /// The password.
        public var password: String
        /// Makes credentials.
        public init(user: String, password: String) {
            self.user = user
            self.password = password
        }
        public var description: String { "\(user):<redacted>" }
    }

    /// The keys, with `endpointsDefault` as the default of `etcd.endpoints`.
    public static func keys(endpointsDefault: String = "http://127.0.0.1:2379") -> [ConfigurationKey] {
        [
            ConfigurationKey("etcd.endpoints", .list, default: endpointsDefault, help: "etcd client URLs, comma-separated (http:// or https://)"),
            ConfigurationKey("etcd.ca-file", .string, help: "PEM CA certificate that signed etcd's certificates (https:// endpoints; default: the system's CAs)"),
            ConfigurationKey("etcd.cert-file", .string, help: "PEM client certificate for etcd's --client-cert-auth (with etcd.key-file)"),
            ConfigurationKey("etcd.key-file", .string, help: "PEM key of etcd.cert-file"),
            ConfigurationKey("etcd.username", .string, help: "etcd user, when etcd auth is enabled (with etcd.password-file)"),
            ConfigurationKey("etcd.password-file", .string, help: "file holding etcd.username's password (first line)"),
        ]
    }

    /// Makes settings.
    public init(endpoints: [String], caFile: String? = nil, certFile: String? = nil, keyFile: String? = nil, credentials: Credentials? = nil) {
        self.endpoints = endpoints
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
        self.credentials = credentials
    }

    /// Reads and checks the keys of ``keys(endpointsDefault:)`` from `config`.
    /// - Throws: ``ConfigurationError`` naming the key: no endpoint, a URL that is neither
    ///   http:// nor https://, TLS files given with only http:// endpoints, a certificate
    ///   without its key (or the reverse), a file that cannot be read, a user without a
    ///   password file (or the reverse), an empty password.
    public init(_ config: Configuration) throws(ConfigurationError) {
        let endpoints = try config.list("etcd.endpoints") ?? []
        guard !endpoints.isEmpty else {
            throw ConfigurationError(code: .invalidValue, key: "etcd.endpoints", source: config.source(of: "etcd.endpoints"), detail: "name at least one etcd client URL, e.g. https://10.0.0.1:2379")
        }
        for endpoint in endpoints where !(endpoint.hasPrefix("http://") || endpoint.hasPrefix("https://")) {
            throw ConfigurationError(
                code: .invalidValue, key: "etcd.endpoints", source: config.source(of: "etcd.endpoints"),
                detail: "'\(endpoint)' is not an http:// or https:// URL")
        }
        func file(_ key: String) throws(ConfigurationError) -> String? {
            guard let path = try config.string(key) else { return nil }
            guard access(path, R_OK) == 0 else {
                throw ConfigurationError(code: .invalidValue, key: key, source: config.source(of: key), detail: "cannot read '\(path)'")
            }
            return path
        }
        let caFile = try file("etcd.ca-file"), certFile = try file("etcd.cert-file"), keyFile = try file("etcd.key-file")
        if (certFile == nil) != (keyFile == nil) {
            let missing = certFile == nil ? "etcd.cert-file" : "etcd.key-file"
            throw ConfigurationError(
                code: .invalidValue, key: missing, source: nil, detail: "etcd.cert-file and etcd.key-file go together: set \(missing) too")
        }
        if caFile != nil || certFile != nil, !endpoints.contains(where: { $0.hasPrefix("https://") }) {
            throw ConfigurationError(
                code: .invalidValue, key: caFile != nil ? "etcd.ca-file" : "etcd.cert-file", source: nil,
                detail: "TLS files are given but every etcd endpoint is http://; use https:// endpoints")
        }
        var credentials: Credentials?
        let user = try config.string("etcd.username"), passwordFile = try file("etcd.password-file")
        switch (user, passwordFile) {
        case (nil, nil): break
        case (let user?, let passwordFile?):
            let text = (try? String(contentsOfFile: passwordFile, encoding: .utf8)) ?? ""
            let password = text.split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
            guard !password.isEmpty else {
                throw ConfigurationError(
                    code: .invalidValue, key: "etcd.password-file", source: config.source(of: "etcd.password-file"), detail: "'\(passwordFile)' holds no password")
            }
            credentials = Credentials(user: user, password: password)
        case (nil, _):
            throw ConfigurationError(code: .invalidValue, key: "etcd.username", source: nil, detail: "etcd.password-file is set: set etcd.username too")
        case (_, nil):
            throw ConfigurationError(code: .invalidValue, key: "etcd.password-file", source: nil, detail: "etcd.username is set: set etcd.password-file too")
        }
        self.init(endpoints: endpoints, caFile: caFile, certFile: certFile, keyFile: keyFile, credentials: credentials)
    }

    /// Whether any TLS file is set.
    public var usesTLSFiles: Bool { caFile != nil || certFile != nil }
}
