import ArgumentParser
import Foundation
import GPUPlaneCore
import GPUPlaneManifest

/// `gpuplane apply -f FILE`: creates or updates every document of a manifest, like `kubectl
/// apply`: applications through `POST /v1/applications` (create or update by name),
/// deployments through `POST /v1/deployments`, or their settings through `PUT` when they exist.
public struct ApplyCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "apply", abstract: "Create or update the applications and deployments of a manifest.",
        discussion: "Prints one line per document (application/NAME created|configured). Errors print as FILE:LINE:COLUMN: error: PATH: message, and the command exits 1.")

    /// The manifest file, or - for standard input.
    @Option(name: .shortAndLong, help: "The manifest (YAML or JSON; - reads standard input; documents separated by ---).")
    public var file: String

    @OptionGroup public var connection: ConnectionOptions

    public init() {}

    public func run() async throws {
        let data = try readInput(file)
        let (lines, ok) = try await Self.apply(data: data, file: file == "-" ? "<stdin>" : file, client: try connection.client())
        for line in lines { print(line) }
        if !ok { throw ExitCode(1) }
    }

    /// The lines `apply` prints for `data`, and whether every document was applied.
    public static func apply(data: Data, file: String, client: APIClient) async throws -> (lines: [String], ok: Bool) {
        var lines: [String] = []
        var ok = true
        let reader = ManifestReader(context: ValidationContext(catalog: try Catalog.standard()))
        for document in Manifests.documents(data) {
            let read = reader.read(document.data, file: file)
            guard let object = read.objects.first, read.objects.count == 1 else {
                // Not even readable: the same findings `validate` prints, at the file's lines.
                let errors = read.diagnostics.errors
                lines += (errors.isEmpty ? read.diagnostics : errors).map { Manifests.shifted($0, by: document.firstLine - 1).description }
                ok = false
                continue
            }
            switch object {
            case .application(let name, _):
                let answer = try await client.call(.post, "/v1/applications", body: document.data, contentType: "application/yaml")
                switch answer.status {
                case 201: lines.append("application/\(name) created")
                case 200: lines.append("application/\(name) configured")
                default:
                    lines += Manifests.errorLines(answer, file: file, lineOffset: document.firstLine - 1)
                    ok = false
                }
            case .deployment(let spec):
                let body = try JSONEncoder().encode(spec)
                let created = try await client.call(.post, "/v1/deployments", body: body)
                switch created.status {
                case 201:
                    lines.append("deployment/\(spec.modelName) created")
                case 409:
                    // It exists: only its settings change at run time.
                    let settings = try JSONEncoder().encode(["settings": spec.settings])
                    let updated = try await client.call(.put, "/v1/deployments/\(spec.modelName)", body: settings)
                    if updated.status == 200 {
                        lines.append("deployment/\(spec.modelName) configured (settings; the rest of a deployment is fixed at creation)")
                    } else {
                        lines += Manifests.errorLines(updated, file: file, lineOffset: nil)
                        ok = false
                    }
                default:
                    lines += Manifests.errorLines(created, file: file, lineOffset: nil)
                    ok = false
                }
            }
        }
        return (lines, ok)
    }
}

/// Splitting manifests into documents, and printing the api-server's findings at the file's lines.
enum Manifests {
    struct Document {
        var data: Data
        /// The file line the document starts on (1-based).
        var firstLine: Int
    }

    /// The documents of a multi-document YAML file (`---` lines apart), without empty ones.
    static func documents(_ data: Data) -> [Document] {
        let text = String(decoding: data, as: UTF8.self)
        var documents: [Document] = []
        var current: [Substring] = []
        var start = 1
        var lineNumber = 0
        func flush() {
            let meaningful = current.contains { line in
                let trimmed = line.trimmingCharacters(in: .whitespaces)
                return !trimmed.isEmpty && !trimmed.hasPrefix("#")
            }
            if meaningful { documents.append(Document(data: Data(current.joined(separator: "\n").utf8), firstLine: start)) }
            current = []
        }
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            let bare = line.hasSuffix("\r") ? line.dropLast() : line
            if bare == "---" || bare.hasPrefix("--- ") {
                flush()
                start = lineNumber + 1
            } else {
                current.append(line)
            }
        }
        flush()
        return documents
    }

    /// A finding moved down by `offset` lines.
    static func shifted(_ diagnostic: Diagnostic, by offset: Int) -> Diagnostic {
        var moved = diagnostic
        moved.line = diagnostic.line.map { $0 + offset }
        return moved
    }

    /// The api-server's refusal, compiler-style when it has positions: every finding of
    /// `details`, else the one error.
    static func errorLines(_ answer: APIClient.Answer, file: String, lineOffset: Int?) -> [String] {
        let details = answer.value["details"].elements
        if !details.isEmpty {
            return details.map { finding in
                let severity = finding["severity"].string ?? "error"
                var place = file
                if let offset = lineOffset, case .integer(let line) = finding["line"] {
                    place += ":\(Int(line) + offset)"
                    if case .integer(let column) = finding["column"] { place += ":\(column)" }
                }
                let path = finding["path"].string.map { $0.isEmpty ? "" : "\($0): " } ?? ""
                return "\(place): \(severity): \(path)\(finding["message"].string ?? "")"
            }
        }
        return [CLIError(answer: answer).description]
    }
}

/// Reads `file`, or standard input for `-`.
func readInput(_ file: String) throws -> Data {
    if file == "-" { return FileHandle.standardInput.readDataToEndOfFile() }
    guard let contents = FileManager.default.contents(atPath: file) else {
        throw ValidationError("cannot read '\(file)': no such file or not readable")
    }
    return contents
}

/// The kinds `get` and `delete` know, with kubectl-style short names.
public enum ResourceKindName: String, ExpressibleByArgument, CaseIterable, Sendable {
    case applications, deployments, replicas, modelservers, nodes, events, tenants

    public init?(argument: String) {
        let aliases: [String: ResourceKindName] = [
            "application": .applications, "applications": .applications, "app": .applications, "apps": .applications,
            "deployment": .deployments, "deployments": .deployments, "deploy": .deployments,
            "replica": .replicas, "replicas": .replicas,
            "modelserver": .modelservers, "modelservers": .modelservers, "ms": .modelservers,
            "node": .nodes, "nodes": .nodes, "no": .nodes,
            "event": .events, "events": .events, "ev": .events,
            "tenant": .tenants, "tenants": .tenants,
        ]
        guard let kind = aliases[argument.lowercased()] else { return nil }
        self = kind
    }

    /// The collection's path.
    var path: String { "/v1/\(rawValue)" }

    /// `items` as this kind's table, header first.
    func table(_ items: [JSONValue]) -> [String] {
        Output.table([columns.map(\.header)] + items.map { item in columns.map { $0.cell(item) } })
    }

    /// The table columns: header and the value's path in each item.
    var columns: [(header: String, cell: (JSONValue) -> String)] {
        func at(_ path: String) -> (JSONValue) -> String { { $0.at(path).cell } }
        switch self {
        case .applications:
            return [
                ("NAME", at("metadata.name")),
                ("PODS", { "\($0.at("status.podsRunning").cell)/\($0.at("status.podsWanted").cell)" }),
                ("VERSION", at("metadata.resourceVersion")), ("CREATED", at("metadata.created")),
            ]
        case .deployments:
            return [
                ("NAME", at("full_name")), ("GPU", { "\($0["num_gpus"].cell)×\($0["gpu"].cell)" }), ("BATCH", at("max_batch_size")),
                ("INSTANCES", { "\($0.at("status.instances_running").cell)/\($0.at("status.instances_wanted").cell)" }),
                ("MIN-MAX", { "\($0.at("settings.min_instances").cell)-\($0.at("settings.max_instances").cell)" }),
                ("STATE", at("status.state")), ("MESSAGE", at("status.message")),
            ]
        case .replicas:
            return [
                ("NAME", at("metadata.name")), ("NODE", at("binding.node")), ("GPUS", at("binding.gpuIndices")),
                ("PHASE", at("status.phase")), ("RESTARTS", at("status.restarts")), ("MESSAGE", at("status.message")),
            ]
        case .modelservers:
            return [
                ("NAME", at("metadata.name")), ("SLUG", at("spec.slug")), ("NODE", at("binding.node")), ("GPUS", at("binding.gpuIndices")),
                ("READY", at("status.ready")), ("ENDPOINT", at("status.endpoint")), ("ATTACHED", at("status.attachedReplicas")),
            ]
        case .nodes:
            return [
                ("NAME", at("metadata.name")),
                ("READY", { node in node.at("status.conditions").elements.first { $0["type"].string == "Ready" }?["status"].cell ?? "-" }),
                ("TYPE", at("spec.machineType")), ("GPUS", { "\($0.at("spec.gpus").elements.count)" }),
                ("CORDONED", at("spec.unschedulable")), ("CONTAINERS", at("status.containers")),
            ]
        case .events:
            return [
                ("TYPE", at("spec.severity")), ("REASON", at("spec.reason")),
                ("OBJECT", { "\($0.at("spec.involved.kind").cell)/\($0.at("spec.involved.name").cell)" }),
                ("COUNT", at("spec.count")), ("MESSAGE", at("spec.message")),
            ]
        case .tenants:
            return [
                ("NAME", at("metadata.name")), ("PLAN", at("spec.plan")), ("GPU-LIMIT", at("spec.gpuLimit")),
            ]
        }
    }
}

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
            for pod in object.at("spec.pods").elements {
                let gpu = pod["gpu"]
                let what = gpu == .null ? "no GPU" : "gpu \(gpu["model"].cell)\(gpu["memoryGB"] == .null ? "" : " \(gpu["memoryGB"].cell) GB"), priority \(gpu["priority"].cell)"
                lines.append("  \(pod["name"].cell): \(pod["image"].cell), \(what)")
            }
        }
        for (title, kind, items) in [("Replicas", ResourceKindName.replicas, replicas), ("Events", .events, events)] {
            lines += ["", "\(title):"] + (items.isEmpty ? ["  none"] : kind.table(items).map { "  " + $0 })
        }
        return lines.joined(separator: "\n")
    }
}

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
