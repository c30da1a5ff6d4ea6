import ArgumentParser
import Foundation

/// `gpuplane usage`: this month's metered hours, credits and cost.
public struct UsageCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(commandName: "usage", abstract: "Show this month's GPU usage, credits and cost.")

    @Option(name: .shortAndLong, help: "Output format: table, json or yaml.")
    public var output: OutputFormat = .table

    @OptionGroup public var connection: ConnectionOptions

    public init() {}

    public func run() async throws {
        let value: JSONValue
        do {
            value = try await connection.client().json(.get, "/v1/usage")
        } catch let error as CLIError {
            FileHandle.standardError.write(Data((error.description + "\n").utf8))
            throw ExitCode(1)
        }
        switch output {
        case .json: print(Output.json(value))
        case .yaml: print(Output.yaml(value))
        case .table:
            print("tenant \(value["tenant"].cell), plan \(value["plan"].cell), since \(value["monthStart"].cell): \(value["credits"].cell) credits, $\(value["costUSD"].cell)")
            let rows = value["modes"].elements.map { mode in
                [mode["mode"].cell, mode["seconds"].cell, mode["includedSeconds"].cell, mode["billableSeconds"].cell, mode["includedHoursLeft"].cell, mode["costUSD"].cell]
            }
            print(Output.table([["MODE", "SECONDS", "INCLUDED", "BILLABLE", "INCLUDED-HOURS-LEFT", "COST-USD"]] + rows).joined(separator: "\n"))
        }
    }
}
