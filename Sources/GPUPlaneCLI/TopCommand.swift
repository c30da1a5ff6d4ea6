import ArgumentParser
import Foundation

/// `gpuplane top nodes|deployments`: what the fleet and the deployments are doing now.
public struct TopCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "top", abstract: "Show GPU and deployment load now.",
        discussion: "nodes: per GPU, its health, utilisation, memory, temperature and power as its node-agent last reported (admins). deployments: instances, requests in flight and queued, requests and completion tokens per second, from the gateways' last reports.")

    /// What to show.
    public enum Subject: String, ExpressibleByArgument, CaseIterable, Sendable { case nodes, deployments }

    @Argument(help: "nodes or deployments.")
    public var subject: Subject

    @Option(name: .shortAndLong, help: "Output format: table or json.")
    public var output: OutputFormat = .table

    @OptionGroup public var connection: ConnectionOptions

    public init() {}

    public func run() async throws {
        do {
            print(try await Self.render(subject, output: output, client: try connection.client()))
        } catch let error as CLIError {
            FileHandle.standardError.write(Data((error.description + "\n").utf8))
            throw ExitCode(1)
        }
    }

    /// What `top` prints.
    public static func render(_ subject: Subject, output: OutputFormat, client: APIClient) async throws -> String {
        var rows: [[String]] = []
        var records: [JSONValue] = []
        switch subject {
        case .nodes:
            let nodes = try await client.json(.get, "/v1/nodes").at("items").elements
            rows.append(["NODE", "GPU", "PRODUCT", "HEALTH", "UTIL", "MEMORY", "TEMP", "POWER"])
            for node in nodes {
                let name = node.at("metadata.name").string ?? "-"
                let health = node.at("status.gpuHealth").elements
                for gpu in node.at("spec.gpus").elements {
                    let uuid = gpu["uuid"].string
                    let record = health.first { $0["uuid"].string == uuid } ?? .null
                    let total = gpu["memoryMiB"].int
                    let used = record["memoryUsedMiB"].int
                    let healthy = record["healthy"].bool
                    var healthText = "-"
                    if let healthy {
                        healthText = healthy ? "healthy" : "unhealthy"
                        if !healthy, let reason = record["reason"].string { healthText += " (\(reason))" }
                    }
                    var memoryText = "-"
                    if let used { memoryText = total.map { "\(used)/\($0) MiB" } ?? "\(used) MiB" }
                    let utilization: String = record["utilizationPercent"].int.map { "\($0)%" } ?? "-"
                    let temperature: String = record["temperatureC"].int.map { "\($0)°C" } ?? "-"
                    let power: String = record["powerW"].int.map { "\($0) W" } ?? "-"
                    let cells: [String] = [name, gpu["index"].cell, gpu["product"].cell, healthText, utilization, memoryText, temperature, power]
                    rows.append(cells)
                    records.append(.object([
                        "node": .string(name), "gpu": gpu["index"], "uuid": gpu["uuid"], "product": gpu["product"],
                        "healthy": record["healthy"], "reason": record["reason"], "utilizationPercent": record["utilizationPercent"],
                        "memoryUsedMiB": record["memoryUsedMiB"], "memoryMiB": gpu["memoryMiB"],
                        "temperatureC": record["temperatureC"], "powerW": record["powerW"],
                    ]))
                }
            }
            if rows.count == 1 { return "No GPUs found." }
        case .deployments:
            let deployments = try await client.json(.get, "/v1/deployments").at("items").elements
            let loads = try await client.json(.get, "/v1/load/deployments").at("items").elements
            rows.append(["NAME", "STATE", "INSTANCES", "IN-FLIGHT", "QUEUED", "REQ/S", "TOKENS/S"])
            for deployment in deployments {
                let fullName = deployment["full_name"].string ?? "-"
                let load = loads.first { "\($0["tenant"].string ?? "")/\($0["name"].string ?? "")" == fullName } ?? .null
                let instances = "\(deployment.at("status.instances_running").cell)/\(deployment.at("status.instances_wanted").cell)"
                rows.append([
                    fullName, deployment.at("status.state").cell, instances,
                    "\(load["inFlight"].int ?? 0)", "\(load["queued"].int ?? 0)",
                    Self.rate(load["requestsPerSecond"].double), Self.rate(load["tokensPerSecond"].double),
                ])
                records.append(.object([
                    "full_name": .string(fullName), "state": deployment.at("status.state"),
                    "instancesRunning": deployment.at("status.instances_running"), "instancesWanted": deployment.at("status.instances_wanted"),
                    "inFlight": .number(Double(load["inFlight"].int ?? 0)), "queued": .number(Double(load["queued"].int ?? 0)),
                    "requestsPerSecond": .number(load["requestsPerSecond"].double ?? 0), "tokensPerSecond": .number(load["tokensPerSecond"].double ?? 0),
                ]))
            }
            if rows.count == 1 { return "No deployments found." }
        }
        switch output {
        case .json, .yaml:
            let value = JSONValue.object(["items": .array(records)])
            return output == .json ? Output.json(value) : Output.yaml(value)
        case .table:
            return Output.table(rows).joined(separator: "\n")
        }
    }

    static func rate(_ value: Double?) -> String {
        guard let value else { return "0" }
        return value < 10 ? String(format: "%.1f", value) : String(format: "%.0f", value)
    }
}
