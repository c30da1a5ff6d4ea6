import ArgumentParser
import Foundation

/// `gpuplane delete KIND NAME`: deletes an application (and its replicas) or a deployment (and
/// its instances).
public struct DeleteCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(commandName: "delete", abstract: "Delete an application or a deployment.")

    @Argument(help: "application or deployment.")
    public var kind: ResourceKindName

    @Argument(help: "Its name (a deployment also by deploy id).")
    public var name: String

    @OptionGroup public var connection: ConnectionOptions

    public init() {}

    public func run() async throws {
        guard kind == .applications || kind == .deployments else {
            throw ValidationError("only applications and deployments are deleted with gpuplane delete, not \(kind.rawValue)")
        }
        let client = try connection.client()
        let escaped = name.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? name
        let answer = try await client.call(.delete, "\(kind.path)/\(escaped)")
        guard answer.status == 204 || answer.status == 200 else {
            FileHandle.standardError.write(Data((CLIError(answer: answer).description + "\n").utf8))
            throw ExitCode(1)
        }
        print("\(kind == .applications ? "application" : "deployment")/\(name) deleted")
    }
}
