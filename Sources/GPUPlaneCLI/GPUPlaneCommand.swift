import ArgumentParser
import Foundation
import GPUPlaneCore
import GPUPlaneManifest

/// The `gpuplane` command line.
public struct GPUPlaneCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "gpuplane",
        abstract: "Deploy models and GPU apps on gpuplane.",
        discussion: "apply, get, describe, delete, logs, top, usage and secret speak to an api-server: --server (or $GPUPLANE_SERVER) and a token (--token-file, $GPUPLANE_TOKEN_FILE or $GPUPLANE_TOKEN), else the context gpuplane login saved. validate, models and completion work offline.",
        subcommands: [
            ApplyCommand.self, GetCommand.self, DescribeCommand.self, DeleteCommand.self, UsageCommand.self, ValidateCommand.self,
            ModelsCommand.self, SecretCommand.self, LogsCommand.self, TopCommand.self, LoginCommand.self, ConfigCommand.self,
            CompletionCommand.self,
        ])

    public init() {}

    /// Parses the process's arguments and runs the command they name, async or not; exits with
    /// ArgumentParser's message and code on an error. (`main()` resolves to the synchronous
    /// entry point from top-level code, which refuses an async root.)
    public static func runMain() async {
        do {
            var command = try parseAsRoot()
            if var asynchronous = command as? any AsyncParsableCommand {
                try await asynchronous.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}

/// Options that say what validation checks against.
public struct ValidationOptions: ParsableArguments {
    /// The plan to check entitlement against; not checked when absent.
    @Option(help: "Check entitlement for this plan (free, pro, scale, enterprise).")
    public var plan: Plan?

    /// An operator catalog that overrides the bundled one.
    @Option(help: "A catalog file (JSON) that overrides the bundled catalog.")
    public var catalog: String?

    /// The fleet's largest GPU memory.
    @Option(help: "The largest gpu.memoryGB this fleet can give.")
    public var maxGPUMemory: Int = ValidationContext.defaultMaxGPUMemoryGB

    /// The tenant's GPU limit.
    @Option(help: "Whole GPUs one user may hold.")
    public var gpuLimit: Int = Tenant.defaultGPULimit

    public init() {}

    /// The context these options describe.
    public func context() throws -> ValidationContext {
        var catalog = try Catalog.standard()
        if let path = self.catalog {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            catalog = try catalog.overridden(byFile: data)
        }
        return ValidationContext(catalog: catalog, maxGPUMemoryGB: maxGPUMemory, plan: plan, gpuLimit: gpuLimit)
    }
}

extension Plan: ExpressibleByArgument {}

/// `gpuplane validate -f FILE`: compiler-style findings, exit 1 on errors.
public struct ValidateCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Check a manifest without applying it.",
        discussion: "Prints findings as FILE:LINE:COLUMN: error: PATH: message. Exits 1 when any is an error.")

    /// The manifest file, or - for standard input.
    @Option(name: .shortAndLong, help: "The manifest (YAML or JSON; - reads standard input).")
    public var file: String

    @OptionGroup public var options: ValidationOptions

    public init() {}

    public func run() throws {
        let context = try options.context()
        let data: Data
        if file == "-" {
            data = FileHandle.standardInput.readDataToEndOfFile()
        } else {
            guard let contents = FileManager.default.contents(atPath: file) else {
                throw ValidationError("cannot read '\(file)': no such file or not readable")
            }
            data = contents
        }
        let report = ValidateCommand.report(data: data, file: file == "-" ? "<stdin>" : file, context: context)
        for line in report.lines { print(line) }
        if !report.valid { throw ExitCode(1) }
    }

    /// The lines `validate` prints for `data`, and whether it is valid.
    public static func report(data: Data, file: String, context: ValidationContext) -> (lines: [String], valid: Bool) {
        let manifest = ManifestReader(context: context).read(data, file: file)
        var lines = manifest.diagnostics.map(\.description)
        let errors = manifest.diagnostics.errors.count
        let warnings = manifest.diagnostics.count - errors
        if manifest.isValid {
            let names = manifest.objects.map { object -> String in
                switch object {
                case .application(let name, let spec): return "application \(name) (\(spec.pods.count) pod\(spec.pods.count == 1 ? "" : "s"))"
                case .deployment(let spec): return "deployment \(spec.modelName)"
                }
            }
            lines.append("\(file): valid: \(names.joined(separator: ", "))\(warnings > 0 ? " (\(warnings) warning\(warnings == 1 ? "" : "s"))" : "")")
        } else {
            lines.append("\(errors) error\(errors == 1 ? "" : "s")\(warnings > 0 ? ", \(warnings) warning\(warnings == 1 ? "" : "s")" : "")")
        }
        return (lines, manifest.isValid)
    }
}

/// `gpuplane models`: the catalog with per-plan availability.
public struct ModelsCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "models", abstract: "List the model catalog and which plans may use each model.")

    @Option(help: "A catalog file (JSON) that overrides the bundled catalog.")
    public var catalog: String?

    @Option(name: .shortAndLong, help: "Output format: table or json.")
    public var output: String = "table"

    public init() {}

    public func run() throws {
        var catalog = try Catalog.standard()
        if let path = self.catalog {
            catalog = try catalog.overridden(byFile: try Data(contentsOf: URL(fileURLWithPath: path)))
        }
        switch output {
        case "table": print(ModelsCommand.table(catalog).joined(separator: "\n"))
        case "json": print(String(decoding: try GPUPlaneJSON.encoder().encode(catalog.models), as: UTF8.self))
        default: throw ValidationError("-o must be table or json, not '\(output)'")
        }
    }

    /// The catalog as table rows, header first.
    public static func table(_ catalog: Catalog) -> [String] {
        let header = ["SLUG", "MODE", "SIZE", "VRAM", "PLANS", "USE"]
        var rows = [header]
        for model in catalog.models {
            let plans = Plan.allCases.filter { $0.allows(model) }.map(\.rawValue).joined(separator: ",")
            rows.append([model.slug, "\(model.mode.rawValue)", model.size.rawValue, "\(model.vramGB) GB", plans, model.useCase])
        }
        rows.append([
            Catalog.auto, "3", "small", catalog.autoModel.map { "\($0.vramGB) GB" } ?? "-",
            Plan.allCases.filter(\.allowsAuto).map(\.rawValue).joined(separator: ","),
            "the scheduler picks a small shared chat model" + (catalog.autoModel.map { " (\($0.slug))" } ?? ""),
        ])
        rows.append([Catalog.custom, "1", "-", "memoryGB", "enterprise", "raw GPUs for your own server"])
        let widths = header.indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { i, cell in i == row.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
                .joined(separator: "  ")
        }
    }
}
