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
        discussion: "Prints one line per document (application/NAME created|configured). Errors print as FILE:LINE:COLUMN: error: PATH: message, and the command exits 1. --dry-run=server checks every document with the api-server (your tenant's plan and limits) and says what would change, writing nothing.")

    /// How a dry run is made.
    public enum DryRun: String, ExpressibleByArgument, Sendable {
        /// Checked by the api-server (`POST /v1/validate`) with the caller's plan; nothing written.
        case server
    }

    /// The manifest file, or - for standard input.
    @Option(name: .shortAndLong, help: "The manifest (YAML or JSON; - reads standard input; documents separated by ---).")
    public var file: String

    /// `--dry-run=server`: check and report, write nothing.
    @Option(name: .customLong("dry-run"), help: "server: the api-server checks every document with your plan and limits and says what would change; nothing is written.")
    public var dryRun: DryRun?

    @OptionGroup public var connection: ConnectionOptions

    public init() {}

    public func run() async throws {
        let data = try readInput(file)
        let name = file == "-" ? "<stdin>" : file
        let client = try connection.client()
        let (lines, ok) = try await dryRun == .server
            ? Self.dryRun(data: data, file: name, client: client) : Self.apply(data: data, file: name, client: client)
        for line in lines { print(line) }
        if !ok { throw ExitCode(1) }
    }

    /// The lines `apply` prints for `data`, and whether every document was applied.
    public static func apply(data: Data, file: String, client: APIClient) async throws -> (lines: [String], ok: Bool) {
        var lines: [String] = []
        var ok = true
        let reader = ManifestReader(context: ValidationContext(catalog: try Catalog.standard()))
        for document in Manifests.documents(data) {
            let object: ManifestObject
            switch Manifests.object(of: document, reader: reader, file: file) {
            case .success(let one): object = one
            case .failure(let findings):
                lines += findings.lines
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

extension ApplyCommand {
    /// The lines `apply --dry-run=server` prints for `data`: for each document, the api-server's
    /// findings for the caller's plan (`POST /v1/validate`) at the file's lines, or what apply
    /// would do (`created` when no object of that name exists, else `configured`); and whether
    /// every document would apply. Writes nothing.
    public static func dryRun(data: Data, file: String, client: APIClient) async throws -> (lines: [String], ok: Bool) {
        var lines: [String] = []
        var ok = true
        let reader = ManifestReader(context: ValidationContext(catalog: try Catalog.standard()))
        let query = file.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed) ?? "manifest"
        for document in Manifests.documents(data) {
            let object: ManifestObject
            switch Manifests.object(of: document, reader: reader, file: file) {
            case .success(let one): object = one
            case .failure(let findings):
                lines += findings.lines
                ok = false
                continue
            }
            let checked = try await client.call(.post, "/v1/validate?file=\(query)", body: document.data, contentType: "application/yaml")
            guard checked.status == 200 else {
                lines += Manifests.errorLines(checked, file: file, lineOffset: document.firstLine - 1)
                ok = false
                continue
            }
            guard checked.value["valid"] == .bool(true) else {
                lines += Manifests.findingLines(checked.value["diagnostics"].elements, file: file, lineOffset: document.firstLine - 1)
                ok = false
                continue
            }
            let (kind, name, path): (String, String, String) = switch object {
            case .application(let name, _): ("application", name, "/v1/applications/\(name)")
            case .deployment(let spec): ("deployment", spec.modelName, "/v1/deployments/\(spec.modelName)")
            }
            let existing = try await client.call(.get, path)
            switch existing.status {
            case 200: lines.append("\(kind)/\(name) configured (server dry run)")
            case 404: lines.append("\(kind)/\(name) created (server dry run)")
            default:
                lines += Manifests.errorLines(existing, file: file, lineOffset: nil)
                ok = false
            }
        }
        return (lines, ok)
    }
}

/// Splitting manifests into documents, and printing the api-server's findings at the file's lines.
enum Manifests {
    /// Findings that stop a document, as lines at the file's positions.
    struct Unreadable: Error {
        var lines: [String]
    }

    /// The one object of `document`, or, when it is not even readable, the same findings
    /// `validate` prints, at the file's lines.
    static func object(of document: Document, reader: ManifestReader, file: String) -> Result<ManifestObject, Unreadable> {
        let read = reader.read(document.data, file: file)
        guard let object = read.objects.first, read.objects.count == 1 else {
            let errors = read.diagnostics.errors
            return .failure(Unreadable(lines: (errors.isEmpty ? read.diagnostics : errors).map { shifted($0, by: document.firstLine - 1).description }))
        }
        return .success(object)
    }

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
        if !details.isEmpty { return findingLines(details, file: file, lineOffset: lineOffset) }
        return [CLIError(answer: answer).description]
    }

    /// Findings (`details` of an error, `diagnostics` of a validation) as FILE:LINE:COLUMN lines.
    static func findingLines(_ findings: [JSONValue], file: String, lineOffset: Int?) -> [String] {
            findings.map { finding in
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
}

/// Reads `file`, or standard input for `-`.
func readInput(_ file: String) throws -> Data {
    if file == "-" { return FileHandle.standardInput.readDataToEndOfFile() }
    guard let contents = FileManager.default.contents(atPath: file) else {
        throw ValidationError("cannot read '\(file)': no such file or not readable")
    }
    return contents
}
