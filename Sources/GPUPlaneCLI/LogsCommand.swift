import ArgumentParser
import Foundation

/// `gpuplane logs REPLICA [-f] [--tail N]`: a replica's container output, read through the
/// api-server from its node's agent.
public struct LogsCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "logs", abstract: "Print a replica's container output (stdout and stderr).",
        discussion: "REPLICA is a name from `gpuplane get replicas`. Admins name the tenant with --tenant when several tenants have a replica of that name.")

    @Argument(help: "The replica.")
    public var replica: String

    @Flag(name: .shortAndLong, help: "Keep printing new output until the container stops or you press Ctrl-C.")
    public var follow = false

    @Option(help: "Print only the last N lines (default: all).")
    public var tail: Int?

    @Option(help: "The replica's tenant (admins; default: the one tenant that has it).")
    public var tenant: String?

    @OptionGroup public var connection: ConnectionOptions

    public init() {}

    public mutating func validate() throws {
        if let tail, tail < 0 { throw ValidationError("--tail must be 0 or more, not \(tail)") }
    }

    public func run() async throws {
        do {
            let client = try connection.client()
            let path = try await Self.path(replica: replica, tenant: tenant, tail: tail, follow: follow, client: client)
            for try await chunk in try await client.stream(path) {
                FileHandle.standardOutput.write(chunk)
            }
        } catch let error as CLIError {
            FileHandle.standardError.write(Data((error.description + "\n").utf8))
            throw ExitCode(1)
        }
    }

    /// The logs path of `replica`: its tenant from the replica list (the caller's own for a
    /// user; for an admin the one tenant that has it, or `tenant`).
    public static func path(replica: String, tenant: String?, tail: Int?, follow: Bool, client: APIClient) async throws -> String {
        let list = tenant.map { "/v1/replicas?tenant=\(Self.escape($0))" } ?? "/v1/replicas"
        let found = try await client.json(.get, list).at("items").elements.filter { $0.at("metadata.name").string == replica }
        let tenants = Set(found.compactMap { $0.at("metadata.tenant").string })
        guard let owner = tenants.first else {
            throw CLIError("error: replica \(replica) not found\(tenant.map { " in tenant \($0)" } ?? ""); see `gpuplane get replicas`")
        }
        guard tenants.count == 1 else {
            throw CLIError("error: tenants \(tenants.sorted().joined(separator: ", ")) each have a replica \(replica); add --tenant")
        }
        var query: [String] = []
        if let tail { query.append("tail=\(tail)") }
        if follow { query.append("follow=true") }
        return "/v1/replicas/\(escape(owner))/\(escape(replica))/logs" + (query.isEmpty ? "" : "?" + query.joined(separator: "&"))
    }

    static func escape(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? text
    }
}
