import ArgumentParser
import Foundation

/// `gpuplane login`: checks a token against an api-server and saves both as a context of the
/// CLI's configuration (``CLIConfig``), made current.
public struct LoginCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "login", abstract: "Save an api-server and a token as a context, and use it.",
        discussion: "The token comes from --token-file, else the first line of standard input. It is checked against the server, then kept in ~/.config/gpuplane/tokens/<context> (mode 0600) unless --token-file names where it lives.")

    @Option(help: "The api-server's URL.")
    public var server: String

    @Option(help: "A PEM CA certificate to verify an https:// api-server with.")
    public var caFile: String?

    @Option(help: "A file whose first line is the token (kept where it is).")
    public var tokenFile: String?

    @Option(help: "The context's name (default: the server's host).")
    public var context: String?

    public init() {}

    public func run() async throws {
        do {
            print(try await login(environment: ProcessInfo.processInfo.environment, standardInput: { readLine(strippingNewline: true) }))
        } catch let error as CLIError {
            FileHandle.standardError.write(Data((error.description + "\n").utf8))
            throw ExitCode(1)
        }
    }

    /// Logs in; returns the line printed.
    public func login(environment: [String: String], standardInput: () -> String?) async throws -> String {
        let base = ConnectionOptions.trimmed(server)
        guard let url = URL(string: base), url.scheme == "http" || url.scheme == "https", let host = url.host, !host.isEmpty else {
            throw CLIError("error: --server must be an http(s) URL such as https://gpu.example.com, not '\(server)'")
        }
        if let caFile, !FileManager.default.isReadableFile(atPath: caFile) { throw CLIError("error: --ca-file: cannot read '\(caFile)'") }
        let token: String
        if let tokenFile {
            guard let text = try? String(contentsOfFile: tokenFile, encoding: .utf8) else { throw CLIError("error: --token-file: cannot read '\(tokenFile)'") }
            token = text.split(whereSeparator: \.isNewline).first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
        } else {
            token = (standardInput() ?? "").trimmingCharacters(in: .whitespaces)
        }
        guard !token.isEmpty else { throw CLIError("error: no token: give --token-file or the token on standard input") }
        let name = context ?? host
        guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || "-._".contains($0) }) else {
            throw CLIError("error: --context must be letters, digits, '-', '.' or '_', not '\(name)'")
        }
        // Any role may list replicas: a token the server accepts answers 200.
        let answer = try await APIClient(base: base, token: token, caFile: caFile).call(.get, "/v1/replicas")
        switch answer.status {
        case 200: break
        case 401: throw CLIError("error: \(base) refused the token (HTTP 401): check it, or ask an admin for a new one")
        default: throw CLIError(answer: answer)
        }
        let path = CLIConfig.path(environment: environment)
        var config = try CLIConfig.load(path: path)
        var kept = tokenFile
        if kept == nil {
            let folder = (path as NSString).deletingLastPathComponent + "/tokens"
            try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            let file = folder + "/" + name
            unlink(file)
            guard FileManager.default.createFile(atPath: file, contents: Data((token + "\n").utf8), attributes: [.posixPermissions: 0o600]) else {
                throw CLIError("error: cannot write \(file)")
            }
            kept = file
        }
        config.contexts[name] = CLIConfig.Context(
            server: base, caFile: caFile.map { URL(fileURLWithPath: $0).standardizedFileURL.path },
            tokenFile: kept.map { URL(fileURLWithPath: $0).standardizedFileURL.path })
        config.current = name
        try config.save(path: path)
        return "logged in to \(base) as context \(name) (now current; saved in \(path))"
    }
}

/// `gpuplane config contexts|use NAME`: the contexts `gpuplane login` saved.
public struct ConfigCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "config", abstract: "List the saved contexts, or choose the current one.",
        subcommands: [Contexts.self, Use.self])

    public init() {}

    /// `gpuplane config contexts`.
    public struct Contexts: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(commandName: "contexts", abstract: "List the saved contexts (* marks the current one).")
        public init() {}
        public func run() async throws {
            let config = try Self.load()
            guard !config.contexts.isEmpty else {
                print("No contexts; run gpuplane login.")
                return
            }
            let rows = config.contexts.keys.sorted().map { name -> [String] in
                let context = config.contexts[name]
                return [config.current == name ? "*" : "", name, context?.server ?? "", context?.caFile ?? "-"]
            }
            print(Output.table([["CURRENT", "NAME", "SERVER", "CA"]] + rows).joined(separator: "\n"))
        }

        static func load() throws -> CLIConfig {
            do { return try CLIConfig.load(path: CLIConfig.path(environment: ProcessInfo.processInfo.environment)) } catch let error as CLIError {
                FileHandle.standardError.write(Data((error.description + "\n").utf8))
                throw ExitCode(1)
            }
        }
    }

    /// `gpuplane config use NAME`.
    public struct Use: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(commandName: "use", abstract: "Make a saved context the current one.")
        @Argument(help: "The context.") public var name: String
        public init() {}
        public func run() async throws {
            let path = CLIConfig.path(environment: ProcessInfo.processInfo.environment)
            var config = try Contexts.load()
            guard config.contexts[name] != nil else {
                FileHandle.standardError.write(Data("error: no context '\(name)' in \(path); see gpuplane config contexts\n".utf8))
                throw ExitCode(1)
            }
            config.current = name
            do { try config.save(path: path) } catch let error as CLIError {
                FileHandle.standardError.write(Data((error.description + "\n").utf8))
                throw ExitCode(1)
            }
            print("now using context \(name)")
        }
    }
}

/// `gpuplane completion bash|zsh|fish`: the shell completion script.
public struct CompletionCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "completion", abstract: "Print a shell completion script.",
        discussion: "bash: source <(gpuplane completion bash). zsh: gpuplane completion zsh > \"${fpath[1]}/_gpuplane\". fish: gpuplane completion fish > ~/.config/fish/completions/gpuplane.fish.")

    /// The shells.
    public enum Shell: String, ExpressibleByArgument, CaseIterable, Sendable { case bash, zsh, fish }

    @Argument(help: "bash, zsh or fish.") public var shell: Shell

    public init() {}

    public func run() throws {
        let kind: CompletionShell = switch shell {
        case .bash: .bash
        case .zsh: .zsh
        case .fish: .fish
        }
        print(GPUPlaneCommand.completionScript(for: kind))
    }
}
