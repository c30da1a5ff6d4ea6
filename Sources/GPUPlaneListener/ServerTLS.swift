import GPUPlaneService
import NIOSSL

/// A daemon's HTTPS (the api-server's, a node-agent's or the scheduler's listener): its certificate chain and key (PEM files, e.g. from
/// `scripts/dev-certs` or the operator's CA), read once at start. Clients (agents, the CLI)
/// verify it against the CA file they are given.
public struct ServerTLS: Sendable {
    /// The TLS configuration the listener serves with (TLS 1.2 and newer).
    public let configuration: TLSConfiguration

    /// The configuration keys.
    public static let keys: [ConfigurationKey] = [
        ConfigurationKey("tls-cert-file", .string, help: "PEM certificate chain: serve HTTPS (with tls-key-file)"),
        ConfigurationKey("tls-key-file", .string, help: "PEM private key of tls-cert-file"),
    ]

    /// Reads the certificate chain at `certFile` and the key at `keyFile`.
    /// - Throws: ``ConfigurationError`` naming the key whose file cannot be read or parsed.
    public init(certFile: String, keyFile: String) throws(ConfigurationError) {
        let chain: [NIOSSLCertificate]
        do { chain = try NIOSSLCertificate.fromPEMFile(certFile) } catch {
            throw ConfigurationError(code: .invalidValue, key: "tls-cert-file", source: nil, detail: "cannot read a PEM certificate chain from '\(certFile)': \(error)")
        }
        guard !chain.isEmpty else {
            throw ConfigurationError(code: .invalidValue, key: "tls-cert-file", source: nil, detail: "'\(certFile)' holds no PEM certificate")
        }
        let key: NIOSSLPrivateKey
        do { key = try NIOSSLPrivateKey(file: keyFile, format: .pem) } catch {
            throw ConfigurationError(code: .invalidValue, key: "tls-key-file", source: nil, detail: "cannot read a PEM private key from '\(keyFile)': \(error)")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        self.configuration = configuration
    }

    /// The HTTPS settings in `config`: nil when neither key is set.
    /// - Throws: ``ConfigurationError`` when only one of the two is set, or a file is bad.
    public static func load(_ config: Configuration) throws(ConfigurationError) -> ServerTLS? {
        switch (try config.string("tls-cert-file"), try config.string("tls-key-file")) {
        case (nil, nil): return nil
        case (let cert?, let key?): return try ServerTLS(certFile: cert, keyFile: key)
        case (nil, _):
            throw ConfigurationError(code: .invalidValue, key: "tls-cert-file", source: nil, detail: "tls-key-file is set: set tls-cert-file too")
        case (_, nil):
            throw ConfigurationError(code: .invalidValue, key: "tls-key-file", source: nil, detail: "tls-cert-file is set: set tls-key-file too")
        }
    }

    /// Whether `host` (a listen address or a URL's host) is loopback: `localhost`, 127.x.x.x
    /// or `::1`.
    public static func isLoopback(host: String) -> Bool {
        let bare = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        return bare == "localhost" || bare == "::1" || bare.hasPrefix("127.")
    }
}
