import ArgumentParser
import Foundation

/// Where the api-server is and who is asking: `--server`/`GPUPLANE_SERVER`, the CA to verify an
/// `https://` server with (`--ca-file`/`GPUPLANE_CA_FILE`), and the token from `--token`,
/// `--token-file`, `GPUPLANE_TOKEN` or `GPUPLANE_TOKEN_FILE`; what none of these give comes from
/// the context (`--context`/`GPUPLANE_CONTEXT`, else the current one) in the CLI's configuration
/// file (``CLIConfig``), which `gpuplane login` writes.
public struct ConnectionOptions: ParsableArguments {
    /// The api-server's base URL.
    @Option(help: "The api-server's URL (default: $GPUPLANE_SERVER, else http://127.0.0.1:8080).")
    public var server: String?

    /// A PEM CA file to verify an https:// api-server with.
    @Option(help: "A PEM CA certificate to verify an https:// api-server with (default: $GPUPLANE_CA_FILE, else the system's CAs).")
    public var caFile: String?

    /// A bearer token.
    @Option(help: "A bearer token (default: $GPUPLANE_TOKEN). Prefer --token-file: arguments show in ps.")
    public var token: String?

    /// A file holding the token.
    @Option(help: "A file whose first line is the bearer token (default: $GPUPLANE_TOKEN_FILE).")
    public var tokenFile: String?

    /// A context of the configuration file.
    @Option(help: "A context of ~/.config/gpuplane/config, written by gpuplane login (default: $GPUPLANE_CONTEXT, else the current one).")
    public var context: String?

    public init() {}

    /// The client these options describe.
    /// - Throws: `ValidationError` naming the option when the token file cannot be read.
    public func client(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> APIClient {
        let configPath = CLIConfig.path(environment: environment)
        let config: CLIConfig
        do { config = try CLIConfig.load(path: configPath) } catch let error as CLIError { throw ValidationError(error.description) }
        var saved: CLIConfig.Context?
        if let name = context ?? environment["GPUPLANE_CONTEXT"] {
            guard let found = config.contexts[name] else {
                let known = config.contexts.keys.sorted().joined(separator: ", ")
                throw ValidationError("--context: no context '\(name)' in \(configPath)\(known.isEmpty ? "; run gpuplane login" : " (there are: \(known))")")
            }
            saved = found
        } else if let current = config.current {
            saved = config.contexts[current]
        }
        // A context's token and CA go to its own server only, never to another named by
        // --server or $GPUPLANE_SERVER.
        if let explicit = server ?? environment["GPUPLANE_SERVER"], let context = saved,
            Self.trimmed(explicit) != Self.trimmed(context.server)
        {
            saved = nil
        }
        var base = server ?? environment["GPUPLANE_SERVER"] ?? saved?.server ?? "http://127.0.0.1:8080"
        while base.hasSuffix("/") { base.removeLast() }
        var secret = token ?? environment["GPUPLANE_TOKEN"]
        if secret == nil, let path = tokenFile ?? environment["GPUPLANE_TOKEN_FILE"] ?? saved?.tokenFile {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw ValidationError("--token-file: cannot read '\(path)'")
            }
            secret = text.split(whereSeparator: \.isNewline).first.map { $0.trimmingCharacters(in: .whitespaces) }
        }
        let ca = caFile ?? environment["GPUPLANE_CA_FILE"] ?? saved?.caFile
        if let ca, !FileManager.default.isReadableFile(atPath: ca) {
            throw ValidationError("--ca-file: cannot read '\(ca)'")
        }
        return APIClient(base: base, token: secret, caFile: ca)
    }

    static func trimmed(_ url: String) -> String {
        var url = url
        while url.hasSuffix("/") { url.removeLast() }
        return url
    }
}
