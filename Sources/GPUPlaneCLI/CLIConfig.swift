import Foundation

/// The CLI's own configuration: named contexts (an api-server, the CA to verify it with, a
/// token file) and the current one. Kept at `$XDG_CONFIG_HOME/gpuplane/config` (default
/// `~/.config/gpuplane/config`) as JSON; `gpuplane login` writes it, flags and `GPUPLANE_*`
/// variables override it.
public struct CLIConfig: Codable, Sendable, Equatable {
    /// One api-server and how to speak to it.
    public struct Context: Codable, Sendable, Equatable {
        /// The api-server's base URL.
        public var server: String
        /// A PEM CA to verify an `https://` server with; nil: the system's CAs.
        public var caFile: String?
        /// The file holding the bearer token.
        public var tokenFile: String?

        /// Makes a context.
        public init(server: String, caFile: String? = nil, tokenFile: String? = nil) {
            self.server = server
            self.caFile = caFile
            self.tokenFile = tokenFile
        }
    }

    /// The context used when `--context` is not given.
    public var current: String?
    /// The contexts by name.
    public var contexts: [String: Context] = [:]

    /// An empty configuration.
    public init() {}

    /// Where the file is, from the environment.
    public static func path(environment: [String: String]) -> String {
        if let xdg = environment["XDG_CONFIG_HOME"], xdg.hasPrefix("/") { return xdg + "/gpuplane/config" }
        return (environment["HOME"] ?? NSHomeDirectory()) + "/.config/gpuplane/config"
    }

    /// The configuration at `path`; empty when there is no file.
    /// - Throws: ``CLIError`` naming the file when it cannot be read or is not one.
    public static func load(path: String) throws -> CLIConfig {
        guard FileManager.default.fileExists(atPath: path) else { return CLIConfig() }
        guard let data = FileManager.default.contents(atPath: path) else { throw CLIError("error: cannot read \(path)") }
        do {
            return try JSONDecoder().decode(CLIConfig.self, from: data)
        } catch {
            throw CLIError("error: \(path) is not a gpuplane CLI configuration (\(error)); fix it or run gpuplane login again")
        }
    }

    /// Writes the configuration to `path` (folders 0700, the file 0600, replaced atomically).
    /// - Throws: ``CLIError`` when it cannot be written.
    public func save(path: String) throws {
        let folder = (path as NSString).deletingLastPathComponent
        do {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            let temporary = path + ".tmp-\(getpid())"
            guard FileManager.default.createFile(atPath: temporary, contents: try encoder.encode(self) + Data("\n".utf8), attributes: [.posixPermissions: 0o600]) else {
                throw CLIError("error: cannot write \(temporary)")
            }
            guard rename(temporary, path) == 0 else {
                unlink(temporary)
                throw CLIError("error: cannot replace \(path): \(String(cString: strerror(errno)))")
            }
        } catch let error as CLIError {
            throw error
        } catch {
            throw CLIError("error: cannot write \(path): \(error.localizedDescription)")
        }
    }
}
