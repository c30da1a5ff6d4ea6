import ArgumentParser
import Foundation

/// `gpuplane get KIND [NAME]`: lists or shows objects, as a table, JSON or YAML.
public struct GetCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "get", abstract: "List objects of a kind, or show one.",
        discussion: "Kinds: applications (app), deployments (deploy), replicas, modelservers (ms), nodes (no), events (ev), tenants.")

    @Argument(help: "The kind.")
    public var kind: ResourceKindName

    @Argument(help: "One object's name (events: the object they are about).")
    public var name: String?

    @Option(name: .shortAndLong, help: "Output format: table, json or yaml.")
    public var output: OutputFormat = .table

    @OptionGroup public var connection: ConnectionOptions

    public init() {}

    public func run() async throws {
        do {
            print(try await Self.render(kind: kind, name: name, output: output, client: try connection.client()))
        } catch let error as CLIError {
            FileHandle.standardError.write(Data((error.description + "\n").utf8))
            throw ExitCode(1)
        }
    }

    /// What `get` prints.
    public static func render(kind: ResourceKindName, name: String?, output: OutputFormat, client: APIClient) async throws -> String {
        let value: JSONValue
        var items: [JSONValue]
        switch (kind, name) {
        case (.replicas, let name?):
            items = try await client.json(.get, kind.path).at("items").elements.filter { $0.at("metadata.name").string == name }
            guard let one = items.first else { throw CLIError("error: replica \(name) not found") }
            value = one
        case (.events, let name?):
            let query = name.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed) ?? name
            value = try await client.json(.get, "\(kind.path)?name=\(query)")
            items = value["items"].elements
        case (_, let name?):
            let escaped = name.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? name
            value = try await client.json(.get, "\(kind.path)/\(escaped)")
            items = [value]
        case (_, nil):
            value = try await client.json(.get, kind.path)
            items = value["items"].elements
        }
        switch output {
        case .json: return Output.json(value)
        case .yaml: return Output.yaml(value)
        case .table:
            guard !items.isEmpty else { return "No \(kind.rawValue) found." }
            return kind.table(items).joined(separator: "\n")
        }
    }
}
