import ArgumentParser
import Foundation

/// `gpuplane describe KIND NAME`: one application or deployment in words, with its replicas
/// (where each runs, or why it waits) and the events about it and them.
public struct DescribeCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "describe", abstract: "Show an application or deployment with its replicas and events.")

    @Argument(help: "application or deployment.")
    public var kind: ResourceKindName

    @Argument(help: "Its name.")
    public var name: String

    @OptionGroup public var connection: ConnectionOptions

    public init() {}

    public func run() async throws {
        do {
            print(try await Self.render(kind: kind, name: name, client: try connection.client()))
        } catch let error as CLIError {
            FileHandle.standardError.write(Data((error.description + "\n").utf8))
            throw ExitCode(1)
        }
    }

    /// What `describe` prints.
    public static func render(kind: ResourceKindName, name: String, client: APIClient) async throws -> String {
        guard kind == .applications || kind == .deployments else {
            throw CLIError("error: describe shows applications and deployments, not \(kind.rawValue)")
        }
        let escaped = name.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? name
        let object = try await client.json(.get, "\(kind.path)/\(escaped)")
        // A deployment's instances are `deploy.<model_name>.<n>`; an application's `<name>.<pod>`.
        let objectName = kind == .deployments ? (object["model_name"].string ?? name) : name
        let prefix = kind == .deployments ? "deploy.\(objectName)." : "\(objectName)."
        let replicas = try await client.json(.get, ResourceKindName.replicas.path)["items"].elements
            .filter { $0.at("metadata.name").string?.hasPrefix(prefix) == true }
        let names = Set([objectName] + replicas.compactMap { $0.at("metadata.name").string })
        let events = try await client.json(.get, ResourceKindName.events.path)["items"].elements
            .filter { names.contains($0.at("spec.involved.name").string ?? "") }
        var lines: [String] = []
        switch kind {
        case .deployments:
            lines.append("Deployment:  \(object["full_name"].cell)   (deploy id \(object["deploy_id"].cell))")
            lines.append("GPU:         \(object["num_gpus"].cell) × \(object["gpu"].cell), max_batch_size \(object["max_batch_size"].cell)")
            lines.append("Weights:     \(object.at("hf.repo").cell)")
            lines.append("Instances:   \(object.at("status.instances_running").cell) running of \(object.at("status.instances_wanted").cell) wanted (min \(object.at("settings.min_instances").cell), max \(object.at("settings.max_instances").cell))")
            lines.append("State:       \(object.at("status.state").cell)\(object.at("status.message").string.map { ": \($0)" } ?? "")")
        default:
            lines.append("Application: \(object.at("metadata.name").cell)   (tenant \(object.at("metadata.tenant").cell), resourceVersion \(object.at("metadata.resourceVersion").cell))")
            lines.append("Pods:        \(object.at("status.podsRunning").cell) running of \(object.at("status.podsWanted").cell)")
            if object.at("status.url") != .null { lines.append("URL:         \(object.at("status.url").cell)") }
            for route in object.at("status.routes").elements {
                let state = route["ready"] == .bool(true) ? "ready" : "not ready"
                lines.append("  \(route["path"].cell) → pod \(route["pod"].cell) port \(route["port"].cell): \(route["url"].cell) (\(state))")
            }
            for pod in object.at("spec.pods").elements {
                let gpu = pod["gpu"]
                let what = gpu == .null ? "no GPU" : "gpu \(gpu["model"].cell)\(gpu["memoryGB"] == .null ? "" : " \(gpu["memoryGB"].cell) GB"), priority \(gpu["priority"].cell)"
                lines.append("  \(pod["name"].cell): \(pod["image"].cell), \(what)")
            }
        }
        let loading = replicas.filter { $0.at("status.loading") != .null }
        if !loading.isEmpty {
            lines += ["", "Loading:"]
            for replica in loading { lines += loadingLines(replica) }
        }
        for (title, kind, items) in [("Replicas", ResourceKindName.replicas, replicas), ("Events", .events, events)] {
            lines += ["", "\(title):"] + (items.isEmpty ? ["  none"] : kind.table(items).map { "  " + $0 })
        }
        return lines.joined(separator: "\n")
    }

    /// A serving replica's loading stage: `name: stage — message (fetch 12.3 s, load 4.5 s)`,
    /// then the engine's last log lines when it exited.
    static func loadingLines(_ replica: JSONValue) -> [String] {
        let loading = replica.at("status.loading")
        var line = "  \(replica.at("metadata.name").cell): \(loading["stage"].cell)"
        if let reason = loading["reason"].string { line += " (\(reason))" }
        if let message = loading["message"].string { line += " — \(message)" }
        var times: [String] = []
        if let fetch = number(loading["fetchSeconds"]) { times.append("fetch \(seconds(fetch))") }
        if let load = number(loading["loadSeconds"]) { times.append("load \(seconds(load))") }
        if !times.isEmpty { line += " (\(times.joined(separator: ", ")))" }
        let tail = loading["logTail"].elements.compactMap(\.string)
        return [line] + (tail.isEmpty ? [] : ["    engine's last lines:"] + tail.map { "      \($0)" })
    }

    private static func number(_ value: JSONValue) -> Double? {
        switch value {
        case .number(let x): return x
        case .integer(let x): return Double(x)
        default: return nil
        }
    }

    private static func seconds(_ value: Double) -> String {
        let tenths = Int((value * 10).rounded())
        return "\(tenths / 10).\(tenths % 10) s"
    }
}
