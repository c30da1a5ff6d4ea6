import ArgumentParser
import Foundation

/// `gpuplane secret create|list|delete`: a tenant's secrets. Values are read from standard
/// input or files, never from arguments (which other users see in `ps`), and never printed.
public struct SecretCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "secret", abstract: "Create, list and delete secrets (values are write-only).",
        discussion: "A pod uses a secret with vars: {NAME: {secret: name}} (or {secret: name, key: k}); a registry secret logs the node-agent in to pull the tenant's images.",
        subcommands: [SecretCreateCommand.self, SecretListCommand.self, SecretDeleteCommand.self])

    public init() {}
}

/// `gpuplane secret create NAME`: a generic secret (one value from standard input, or
/// `--from-file KEY=PATH` values) or a registry login (`--registry`, `--username`, the password
/// from standard input or `--password-file`). `--replace` replaces an existing one.
public struct SecretCreateCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "create", abstract: "Create (or with --replace, replace) a secret.",
        discussion: """
            gpuplane secret create db-url < url.txt               (one value, key 'value', from standard input)
            gpuplane secret create db --from-file user=u.txt --from-file password=p.txt
            gpuplane secret create hub --registry registry.example.com --username bot --password-file token.txt
            One trailing newline of standard input or a file is dropped.
            """)

    @Argument(help: "The secret's name (a DNS label).")
    public var name: String

    @Option(name: .customLong("from-file"), help: "KEY=PATH: a value read from a file (repeatable).")
    public var fromFile: [String] = []

    @Option(help: "The key of the value read from standard input (generic secrets).")
    public var key: String = "value"

    @Option(help: "Make a registry login for this registry (host[:port] as in image references).")
    public var registry: String?

    @Option(help: "The registry user name.")
    public var username: String?

    @Option(name: .customLong("password-file"), help: "A file holding the registry password (default: standard input).")
    public var passwordFile: String?

    @Flag(help: "Replace the secret if it exists (PUT) instead of creating it.")
    public var replace = false

    @OptionGroup public var connection: ConnectionOptions

    public init() {}

    /// The text of `path` (`-`: standard input), with one trailing newline dropped.
    static func read(_ path: String, what: String) throws -> String {
        let data: Data
        if path == "-" {
            data = FileHandle.standardInput.readDataToEndOfFile()
        } else {
            guard let contents = FileManager.default.contents(atPath: path) else { throw ValidationError("\(what): cannot read '\(path)'") }
            data = contents
        }
        guard var text = String(data: data, encoding: .utf8) else { throw ValidationError("\(what): '\(path)' is not UTF-8 text") }
        if text.hasSuffix("\r\n") { text.removeLast(2) } else if text.hasSuffix("\n") { text.removeLast() }
        return text
    }

    /// The request body this command sends.
    func body() throws -> [String: Any] {
        var body: [String: Any] = ["name": name]
        if let registry {
            guard fromFile.isEmpty else { throw ValidationError("--from-file is for generic secrets; a registry secret takes --username and a password") }
            guard let username else { throw ValidationError("--registry needs --username") }
            body["type"] = "registry"
            body["registry"] = registry
            body["username"] = username
            body["password"] = try Self.read(passwordFile ?? "-", what: "--password-file")
            return body
        }
        guard username == nil, passwordFile == nil else { throw ValidationError("--username and --password-file go with --registry") }
        var data: [String: String] = [:]
        for item in fromFile {
            guard let equals = item.firstIndex(of: "="), equals != item.startIndex else {
                throw ValidationError("--from-file takes KEY=PATH, not '\(item)'")
            }
            data[String(item[..<equals])] = try Self.read(String(item[item.index(after: equals)...]), what: "--from-file")
        }
        if data.isEmpty { data[key] = try Self.read("-", what: "standard input") }
        body["type"] = "generic"
        body["data"] = data
        return body
    }

    public func run() async throws {
        let payload = try JSONSerialization.data(withJSONObject: try body(), options: [.sortedKeys])
        let client = try connection.client()
        let answer = try await replace
            ? client.call(.put, "/v1/secrets/\(name.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? name)", body: payload)
            : client.call(.post, "/v1/secrets", body: payload)
        guard (200..<300).contains(answer.status) else {
            FileHandle.standardError.write(Data((CLIError(answer: answer).description + "\n").utf8))
            throw ExitCode(1)
        }
        let keys = answer.value["spec"]["keys"].elements.compactMap(\.string)
        print("secret/\(name) \(replace ? "replaced" : "created") (\(keys.joined(separator: ", ")))")
    }
}

/// `gpuplane secret list`: names, types, keys and registries; never values.
public struct SecretListCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(commandName: "list", abstract: "List secrets (names, types and keys).")

    @OptionGroup public var connection: ConnectionOptions

    public init() {}

    public func run() async throws {
        let list = try await connection.client().json(.get, "/v1/secrets")
        var rows = [["NAME", "TYPE", "KEYS", "REGISTRY"]]
        for item in list["items"].elements {
            let spec = item["spec"]
            rows.append([
                item["metadata"]["name"].string ?? "", spec["type"].string ?? "",
                spec["keys"].elements.compactMap(\.string).joined(separator: ","), spec["registry"].string ?? "-",
            ])
        }
        for line in Output.table(rows) { print(line) }
    }
}

/// `gpuplane secret delete NAME`.
public struct SecretDeleteCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "delete", abstract: "Delete a secret (running containers keep the values they got).")

    @Argument(help: "The secret's name.")
    public var name: String

    @OptionGroup public var connection: ConnectionOptions

    public init() {}

    public func run() async throws {
        let answer = try await connection.client().call(
            .delete, "/v1/secrets/\(name.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? name)")
        guard answer.status == 204 || answer.status == 200 else {
            FileHandle.standardError.write(Data((CLIError(answer: answer).description + "\n").utf8))
            throw ExitCode(1)
        }
        print("secret/\(name) deleted")
    }
}
