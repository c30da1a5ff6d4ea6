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

    @Flag(name: .shortAndLong, help: "After listing, print each change as it happens (a row per event; with -o json, the watch events), until Ctrl-C.")
    public var watch = false

    @OptionGroup public var connection: ConnectionOptions

    public init() {}

    public mutating func validate() throws {
        if watch, kind == .tenants { throw ValidationError("--watch: tenants cannot be watched") }
    }

    public func run() async throws {
        do {
            if watch {
                try await Self.watch(
                    kind: kind, name: name, output: output, client: try connection.client(),
                    notice: { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }
                ) { line in
                    FileHandle.standardOutput.write(Data((line + "\n").utf8))
                }
                return
            }
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

    /// `get --watch`: the kind's watch from its beginning (an `ADDED` per existing object, then
    /// every change), each event as a row of the kind's table after an EVENT column (with
    /// `name`, only that object's), or as the event's JSON line with `-o json`. Runs until
    /// cancelled: when the stream ends (its api-server shut down and said to reconnect with an
    /// `ERROR` 503 line, or the connection was lost), it says so through `notice` and resumes
    /// from the last version it saw, at the same URL (another api-server behind it, or this one
    /// started again), so no change is missed (the lines of one transaction cut in the middle
    /// by a lost connection come again, as the API's revision rule says); it tries to connect for
    /// ``watchReconnectPatience`` before it gives up. Any other `ERROR` (410: the version was
    /// compacted) is thrown, as is a refusal.
    public static func watch(
        kind: ResourceKindName, name: String?, output: OutputFormat, client: APIClient,
        notice: (String) -> Void = { _ in }, emit: (String) -> Void
    ) async throws {
        var widths: [Int] = []
        let header = ["EVENT"] + kind.columns.map(\.header)
        func row(_ cells: [String]) -> String {
            if widths.isEmpty { widths = header.map(\.count) }
            for (i, cell) in cells.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) }
            return zip(cells, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "   ")
                .trimmingCharacters(in: .whitespaces)
        }
        if output == .table { emit(row(header)) }
        // The version of the last line read: where a resumed watch starts.
        var resume: String?
        while true {
            let path = kind.path + "?watch=true" + (resume.map { "&resourceVersion=\($0)" } ?? "")
            let stream: AsyncThrowingStream<Data, any Error>
            if resume == nil {
                stream = try await client.stream(path)
            } else {
                stream = try await reconnect(client, path)
            }
            var pending = Data()
            var ended: String?
            do {
                lines: for try await chunk in stream {
                    pending.append(chunk)
                    while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                        let line = pending[pending.startIndex..<newline]
                        pending.removeSubrange(pending.startIndex...newline)
                        guard let event = JSONValue.parse(Data(line)) else { continue }
                        let type = event["type"].string ?? ""
                        if type == "ERROR" {
                            let message = event.at("error.message").string ?? "code \(event.at("error.code").cell)"
                            // 503: the server ended the stream and asks the client to come back.
                            guard event.at("error.code").int == 503, resume != nil else {
                                throw CLIError("error: the watch ended: \(message); run it again")
                            }
                            ended = message
                            break lines
                        }
                        if let version = event["resourceVersion"].string { resume = version }
                        guard type != "BOOKMARK" else { continue }
                        let object = event["object"]
                        if let name, object.at("metadata.name").string != name, object["full_name"].string != name,
                            object.at("spec.involved.name").string != name
                        {
                            continue
                        }
                        switch output {
                        case .table: emit(row([type] + kind.columns.map { $0.cell(object) }))
                        case .json: emit(String(decoding: line, as: UTF8.self))
                        case .yaml: emit("---\n" + Output.yaml(event))
                        }
                    }
                }
            } catch let error as CLIError {
                throw error
            } catch {
                // The connection broke mid-stream (the api-server killed, the network).
                guard resume != nil, !Task.isCancelled else { throw error }
                ended = "the connection to the api-server was lost"
            }
            try Task.checkCancellation()
            guard let version = resume else { return }
            notice("watch: \(ended ?? "the api-server ended the stream"); resuming from resourceVersion \(version)")
        }
    }

    /// How long a resumed `get --watch` keeps trying to reach the api-server (one restarting
    /// behind the same URL takes a few seconds).
    public static let watchReconnectPatience = Duration.seconds(60)

    /// Opens the watch at `path` again, retrying while no answer comes or the answer is 503
    /// (pauses from 0.2 s doubling to 2 s) for ``watchReconnectPatience``; another answer that
    /// is not 2xx is thrown.
    private static func reconnect(_ client: APIClient, _ path: String) async throws -> AsyncThrowingStream<Data, any Error> {
        let deadline = ContinuousClock.now + watchReconnectPatience
        var pause = Duration.milliseconds(200)
        while true {
            do {
                return try await client.stream(path)
            } catch let error as CLIError where error.isTransient && ContinuousClock.now + pause < deadline {
                try await Task.sleep(for: pause)
                pause = min(pause * 2, .seconds(2))
            }
        }
    }
}
