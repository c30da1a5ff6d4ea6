#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import GPUPlaneSystem

/// One setting a daemon understands, declared by the daemon.
///
/// Names are lowercase letters, digits, `-` and `.` (`listen-port`, `etcd.endpoints`). The
/// same key is spelled `listen-port = 8080` in the file, `GPUPLANE_LISTEN_PORT=8080` in the
/// environment and `--listen-port 8080` (or `--listen-port=8080`) on the command line.
public struct ConfigurationKey: Sendable, Hashable {
    /// The type a value must parse as; checked for every source when configuration loads.
    public enum Kind: String, Sendable, Hashable {
        /// Any text.
        case string
        /// A decimal integer.
        case int
        /// Seconds, optionally fractional, or a number with a unit: `500ms`, `30s`, `5m`, `1h`.
        case duration
        /// `true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0` (any case).
        case bool
        /// Comma-separated items; spaces around items and empty items are dropped.
        case list
    }

    /// The key's name, e.g. `listen-port`.
    public let name: String
    /// What its value must parse as.
    public let kind: Kind
    /// The value used when no source sets the key, in the same text form as the file.
    public let defaultValue: String?
    /// Whether loading fails when no source (nor a default) sets the key.
    public let isRequired: Bool
    /// One line for `--help` and the docs.
    public let help: String

    /// Declares a key. Traps on a name outside `[a-z0-9.-]` (a programming error).
    public init(
        _ name: String, _ kind: Kind, default defaultValue: String? = nil, required: Bool = false,
        help: String = ""
    ) {
        precondition(
            !name.isEmpty
                && name.unicodeScalars.allSatisfy {
                    ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" || $0 == "."
                },
            "configuration key names are [a-z0-9.-]: \(name)")
        self.name = name
        self.kind = kind
        self.defaultValue = defaultValue
        self.isRequired = required
        self.help = help
    }

    /// `GPUPLANE_` and the name uppercased with `-` and `.` as `_`: `GPUPLANE_ETCD_ENDPOINTS`.
    public var environmentVariable: String {
        Configuration.environmentPrefix
            + name.uppercased().replacingAll("-", with: "_")
            .replacingAll(".", with: "_")
    }

    /// `--` and the name: `--etcd.endpoints`.
    public var flag: String { "--" + name }
}

/// Where a configuration value came from, lowest precedence first.
public enum ConfigurationSource: Sendable, Hashable, CustomStringConvertible {
    /// The key's declared default.
    case defaultValue
    /// A line of the configuration file.
    case file(path: String, line: Int)
    /// An environment variable.
    case environment(variable: String)
    /// A command-line flag.
    case commandLine(flag: String)

    /// `path:line`, `environment GPUPLANE_X`, `command line --x` or `default`.
    public var description: String {
        switch self {
        case .defaultValue: return "default"
        case .file(let path, let line): return "\(path):\(line)"
        case .environment(let variable): return "environment \(variable)"
        case .commandLine(let flag): return "command line \(flag)"
        }
    }
}

/// Why configuration could not be loaded or read.
public struct ConfigurationError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What kind of problem it is; compare codes, never descriptions.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private enum Value: String, Sendable, Hashable {
            case unknownKey, invalidValue, malformedLine, duplicateKey, missingValue
            case missingRequiredKey, unreadableFile, undeclaredKey
        }
        private let value: Value
        private init(_ value: Value) { self.value = value }

        /// A file line or flag names a key the daemon does not declare.
        public static let unknownKey = Code(.unknownKey)
        /// A value does not parse as its key's kind.
        public static let invalidValue = Code(.invalidValue)
        /// A file line is neither blank, a `#` comment, nor `key = value`.
        public static let malformedLine = Code(.malformedLine)
        /// The file sets the same key twice.
        public static let duplicateKey = Code(.duplicateKey)
        /// A flag that needs a value came last.
        public static let missingValue = Code(.missingValue)
        /// A required key is set nowhere.
        public static let missingRequiredKey = Code(.missingRequiredKey)
        /// The configuration file named explicitly cannot be read.
        public static let unreadableFile = Code(.unreadableFile)
        /// A getter asked for a key that was never declared (a programming error).
        public static let undeclaredKey = Code(.undeclaredKey)

        /// The code's name, e.g. `invalidValue`; safe as a metric label.
        public var description: String { value.rawValue }
    }

    /// What went wrong.
    public let code: Code
    /// The key concerned, when there is one.
    public let key: String?
    /// Where the bad input is, when it came from a source.
    public let source: ConfigurationSource?
    /// The detail, e.g. `expected an integer, got "eighty"`.
    public let detail: String

    /// An error with `code` about `key` at `source`.
    public init(code: Code, key: String?, source: ConfigurationSource?, detail: String) {
        self.code = code
        self.key = key
        self.source = source
        self.detail = detail
    }

    /// `/etc/gpuplane/scheduler.conf:3: listen-port: expected an integer, got "eighty"`.
    public var description: String {
        var text = ""
        if let source { text += "\(source): " }
        if let key { text += "\(key): " }
        return text + detail
    }
}

/// Settings merged from, in increasing precedence: declared defaults, a configuration file,
/// `GPUPLANE_*` environment variables, and command-line flags.
///
/// ## File format
/// One `key = value` per line. Blank lines and lines whose first non-blank character is `#`
/// are ignored; there are no inline comments, so values may contain `#`. Spaces around key and
/// value are trimmed; wrap a value in double quotes to keep its outer spaces. A key may appear
/// once. Unknown keys are errors, reported with `path:line`.
///
/// ```
/// # /etc/gpuplane/scheduler.conf
/// etcd.endpoints = http://10.0.0.1:2379, http://10.0.0.2:2379
/// leader-lease = 15s
/// ```
///
/// ## Environment
/// `GPUPLANE_<KEY>` for each declared key (see ``ConfigurationKey/environmentVariable``);
/// other variables are ignored, since several daemons may share one environment.
///
/// ## Command line
/// `--key value` or `--key=value`; a bool key also takes bare `--key` (true) and `--no-key`
/// (false). `--config PATH` names the file. Arguments that are not flags, and everything after
/// `--`, are kept in ``positionalArguments``. `--help` (or `-h`) prints ``usage(program:keys:defaultConfigFile:)``
/// (every key, its default and its environment variable) and exits 0: see ``load(keys:arguments:environment:defaultConfigFile:)``.
///
/// Every value is checked against its key's ``ConfigurationKey/Kind`` while loading, so a bad
/// value stops the daemon at start-up with the key and where it was set.
public struct Configuration: Sendable {
    /// Prefix of the environment variables read.
    public static let environmentPrefix = "GPUPLANE_"
    /// The environment variable naming the configuration file, when `--config` is absent.
    public static let configFileVariable = "GPUPLANE_CONFIG"

    /// A value and where it came from.
    public struct Entry: Sendable, Hashable {
        /// The value as written.
        public let text: String
        /// Where it was set.
        public let source: ConfigurationSource
    }

    /// The declared keys by name.
    public let keys: [String: ConfigurationKey]
    /// The winning value of each key that has one.
    public let entries: [String: Entry]
    /// The configuration file that was read, if any.
    public let configFile: String?
    /// Command-line arguments that were not flags.
    public let positionalArguments: [String]

    /// Loads configuration for the declared `keys`.
    ///
    /// - Parameters:
    ///   - keys: every key the daemon understands.
    ///   - arguments: command-line arguments without the program name.
    ///   - environment: the process environment.
    ///   - defaultConfigFile: read when neither `--config` nor `GPUPLANE_CONFIG` names a file;
    ///     a missing default file is not an error, a missing named one is.
    ///
    /// When `arguments` ask for help (``helpRequested(_:)``), prints the usage to standard
    /// output and exits the process with status 0 before anything else is read: every daemon
    /// loads its configuration first, so `gpuplane-<daemon> --help` does nothing else.
    public static func load(
        keys: [ConfigurationKey], arguments: [String] = Array(CommandLine.arguments.dropFirst()),
        environment: [String: String] = ProcessInfo.processInfo.environment,
        defaultConfigFile: String? = nil
    ) throws(ConfigurationError) -> Configuration {
        if helpRequested(arguments) {
            let program = CommandLine.arguments.first.map { $0.split(separator: "/").last.map(String.init) ?? $0 } ?? "gpuplane"
            let text = usage(program: program, keys: keys, defaultConfigFile: defaultConfigFile)
            var bytes = Array(text.utf8)[...]
            while !bytes.isEmpty {
                let written = bytes.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
                if written < 0, errno == EINTR { continue }
                guard written > 0 else { break }
                bytes = bytes.dropFirst(written)
            }
            exit(0)
        }
        let parsed = try CommandLineParser.parse(arguments, keys: declare(keys))
        var path: String?
        var required = true
        if let flagged = parsed.configFile {
            path = flagged
        } else if let fromEnvironment = environment[configFileVariable], !fromEnvironment.isEmpty {
            path = fromEnvironment
        } else {
            path = defaultConfigFile
            required = false
        }
        var contents: String?
        if let path {
            do {
                contents = try SystemFile.readText(path)
            } catch {
                if required || !error.isMissing {
                    throw ConfigurationError(
                        code: .unreadableFile, key: nil, source: nil,
                        detail: "cannot read configuration file \(path): \(error.reason)")
                }
            }
        }
        return try Configuration(
            keys: keys, file: contents.map { (path ?? "", $0) }, environment: environment,
            parsedArguments: parsed)
    }

    /// Whether `arguments` ask for help: `--help` or `-h` before any `--`.
    public static func helpRequested(_ arguments: [String]) -> Bool {
        for argument in arguments {
            if argument == "--" { return false }
            if argument == "--help" || argument == "-h" { return true }
        }
        return false
    }

    /// What `--help` prints: how settings are given, then every key with its kind, what it
    /// does, its default and its environment variable.
    public static func usage(program: String, keys: [ConfigurationKey], defaultConfigFile: String?) -> String {
        let placeholders: [ConfigurationKey.Kind: String] = [
            .string: "TEXT", .int: "N", .duration: "DURATION", .bool: "[true|false]", .list: "A,B,…",
        ]
        var text = "usage: \(program) [--config PATH] [--KEY VALUE | --KEY=VALUE]...\n\n"
        text += "Each setting is taken, later winning, from its default, the configuration file\n"
        text += "(--config PATH, else $\(configFileVariable)"
        text += defaultConfigFile.map { ", else \($0) when it exists" } ?? ""
        text += "; one `key = value` a line),\n"
        text += "the environment (\(environmentPrefix)KEY, with - and . as _) and the command line.\n"
        text += "Durations: 30, 30s, 500ms, 5m, 1h. A bool flag alone means true; --no-KEY means false.\n\n"
        text += "settings:\n"
        for key in keys {
            var line = "  \(key.flag) \(placeholders[key.kind] ?? "VALUE")"
            if !key.help.isEmpty { line += "\n      \(key.help)" }
            let fallback: String
            if let value = key.defaultValue {
                fallback = "default: \(value.isEmpty ? "\"\" (empty)" : value)"
            } else {
                fallback = key.isRequired ? "required" : "optional"
            }
            line += "\n      (\(fallback); \(key.environmentVariable))"
            text += line + "\n"
        }
        text += "  --config PATH\n      the configuration file (\(defaultConfigFile.map { "default: \($0)" } ?? "no default"); \(configFileVariable))\n"
        text += "  --help, -h\n      print this and exit\n"
        return text
    }

    /// Builds configuration from already-read sources, for tests and embedders.
    ///
    /// - Parameters:
    ///   - file: the file's path (for error messages) and contents.
    public init(
        keys: [ConfigurationKey], file: (path: String, contents: String)? = nil,
        environment: [String: String] = [:], arguments: [String] = []
    ) throws(ConfigurationError) {
        let parsed = try CommandLineParser.parse(arguments, keys: Self.declare(keys))
        try self.init(keys: keys, file: file, environment: environment, parsedArguments: parsed)
    }

    private init(
        keys: [ConfigurationKey], file: (path: String, contents: String)?,
        environment: [String: String], parsedArguments: CommandLineParser.Result
    ) throws(ConfigurationError) {
        let declared = try Self.declare(keys)
        var entries: [String: Entry] = [:]
        for key in keys {
            if let value = key.defaultValue { entries[key.name] = Entry(text: value, source: .defaultValue) }
        }
        if let file {
            for (name, entry) in try FileParser.parse(file.contents, path: file.path, keys: declared) {
                entries[name] = entry
            }
        }
        for key in keys {
            if let value = environment[key.environmentVariable] {
                entries[key.name] = Entry(
                    text: value, source: .environment(variable: key.environmentVariable))
            }
        }
        for (name, entry) in parsedArguments.entries { entries[name] = entry }

        for key in keys {
            guard let entry = entries[key.name] else {
                if key.isRequired {
                    throw ConfigurationError(
                        code: .missingRequiredKey, key: key.name, source: nil,
                        detail:
                            "required; set it in the configuration file, \(key.environmentVariable) or \(key.flag)"
                    )
                }
                continue
            }
            try Self.validate(entry, for: key)
        }
        self.keys = declared
        self.entries = entries
        self.configFile = file?.path
        self.positionalArguments = parsedArguments.positional
    }

    private static func declare(_ keys: [ConfigurationKey]) throws(ConfigurationError) -> [String: ConfigurationKey] {
        var declared: [String: ConfigurationKey] = [:]
        for key in keys {
            if declared.updateValue(key, forKey: key.name) != nil {
                throw ConfigurationError(
                    code: .duplicateKey, key: key.name, source: nil, detail: "declared twice")
            }
        }
        return declared
    }

    private static func validate(_ entry: Entry, for key: ConfigurationKey) throws(ConfigurationError) {
        switch key.kind {
        case .string, .list: return
        case .int: _ = try ValueParser.int(entry, key: key.name)
        case .duration: _ = try ValueParser.duration(entry, key: key.name)
        case .bool: _ = try ValueParser.bool(entry, key: key.name)
        }
    }

    private func entry(_ name: String) throws(ConfigurationError) -> Entry? {
        guard keys[name] != nil else {
            throw ConfigurationError(
                code: .undeclaredKey, key: name, source: nil, detail: "not a declared configuration key")
        }
        return entries[name]
    }

    /// Where `name`'s value came from, or nil when it is unset.
    public func source(of name: String) -> ConfigurationSource? { entries[name]?.source }

    /// The text of `name`, or nil when unset.
    public func string(_ name: String) throws(ConfigurationError) -> String? {
        try entry(name)?.text
    }

    /// `name` as an integer, or nil when unset.
    public func int(_ name: String) throws(ConfigurationError) -> Int? {
        guard let entry = try entry(name) else { return nil }
        return try ValueParser.int(entry, key: name)
    }

    /// `name` as a duration, or nil when unset.
    public func duration(_ name: String) throws(ConfigurationError) -> Duration? {
        guard let entry = try entry(name) else { return nil }
        return try ValueParser.duration(entry, key: name)
    }

    /// `name` as a bool, or nil when unset.
    public func bool(_ name: String) throws(ConfigurationError) -> Bool? {
        guard let entry = try entry(name) else { return nil }
        return try ValueParser.bool(entry, key: name)
    }

    /// `name` as a comma-separated list, or nil when unset.
    public func list(_ name: String) throws(ConfigurationError) -> [String]? {
        guard let entry = try entry(name) else { return nil }
        return ValueParser.list(entry.text)
    }
}

enum ValueParser {
    static func invalid(_ entry: Configuration.Entry, key: String, expected: String) -> ConfigurationError {
        ConfigurationError(
            code: .invalidValue, key: key, source: entry.source,
            detail: "expected \(expected), got \"\(entry.text)\"")
    }

    static func int(_ entry: Configuration.Entry, key: String) throws(ConfigurationError) -> Int {
        guard let value = Int(entry.text.trimmingWhitespace()) else {
            throw invalid(entry, key: key, expected: "an integer")
        }
        return value
    }

    static func bool(_ entry: Configuration.Entry, key: String) throws(ConfigurationError) -> Bool {
        switch entry.text.trimmingWhitespace().lowercased() {
        case "true", "yes", "on", "1": return true
        case "false", "no", "off", "0": return false
        default: throw invalid(entry, key: key, expected: "true or false")
        }
    }

    static func duration(_ entry: Configuration.Entry, key: String) throws(ConfigurationError) -> Duration {
        let text = entry.text.trimmingWhitespace().lowercased()
        let units: [(suffix: String, seconds: Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86_400)]
        var number = Substring(text)
        var scale = 1.0
        for unit in units where text.hasSuffix(unit.suffix) {
            number = text.dropLast(unit.suffix.count)
            scale = unit.seconds
            break
        }
        guard let value = Double(number), value.isFinite, value >= 0,
            number.allSatisfy({ $0.isNumber || $0 == "." })
        else {
            throw invalid(entry, key: key, expected: "a duration such as 30, 30s, 500ms, 5m, 1h or 400d")
        }
        let nanoseconds = (value * scale * 1e9).rounded()
        guard nanoseconds < Double(Int64.max) else {
            throw invalid(entry, key: key, expected: "a duration below 292 years")
        }
        return .nanoseconds(Int64(nanoseconds))
    }

    static func list(_ text: String) -> [String] {
        text.split(separator: ",").map { $0.trimmingWhitespace() }.filter { !$0.isEmpty }
    }
}

enum FileParser {
    static func parse(
        _ contents: String, path: String, keys: [String: ConfigurationKey]
    ) throws(ConfigurationError) -> [String: Configuration.Entry] {
        var entries: [String: Configuration.Entry] = [:]
        var lineNumber = 0
        for rawLine in contents.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = rawLine.trimmingWhitespace()
            if line.isEmpty || line.hasPrefix("#") { continue }
            let source = ConfigurationSource.file(path: path, line: lineNumber)
            guard let equals = line.firstIndex(of: "=") else {
                throw ConfigurationError(
                    code: .malformedLine, key: nil, source: source,
                    detail: "expected key = value, got \"\(line)\"")
            }
            let name = line[..<equals].trimmingWhitespace()
            var value = line[line.index(after: equals)...].trimmingWhitespace()
            if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") {
                value = String(value.dropFirst().dropLast())
            }
            guard keys[name] != nil else {
                throw ConfigurationError(
                    code: name.isEmpty ? .malformedLine : .unknownKey, key: name.isEmpty ? nil : name,
                    source: source, detail: name.isEmpty ? "missing key before =" : "unknown key")
            }
            if let earlier = entries[name] {
                throw ConfigurationError(
                    code: .duplicateKey, key: name, source: source, detail: "already set at \(earlier.source)")
            }
            entries[name] = Configuration.Entry(text: value, source: source)
        }
        return entries
    }
}

enum CommandLineParser {
    struct Result {
        var entries: [String: Configuration.Entry] = [:]
        var positional: [String] = []
        var configFile: String?
    }

    static func parse(
        _ arguments: [String], keys: [String: ConfigurationKey]
    ) throws(ConfigurationError) -> Result {
        var result = Result()
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            if argument == "--" {
                result.positional.append(contentsOf: arguments[index...])
                break
            }
            guard argument.hasPrefix("--"), argument.count > 2 else {
                result.positional.append(argument)
                continue
            }
            let body = argument.dropFirst(2)
            var name: String
            var inlineValue: String?
            if let equals = body.firstIndex(of: "=") {
                name = String(body[..<equals])
                inlineValue = String(body[body.index(after: equals)...])
            } else {
                name = String(body)
            }
            let flag = "--" + name
            var negated = false
            if keys[name] == nil, name != "config", name.hasPrefix("no-"),
                let key = keys[String(name.dropFirst(3))], key.kind == .bool, inlineValue == nil
            {
                name = key.name
                negated = true
            }
            let value: String
            if negated {
                value = "false"
            } else if let inlineValue {
                value = inlineValue
            } else if keys[name]?.kind == .bool
                && (index >= arguments.count || arguments[index].hasPrefix("--")
                    || !isBoolLiteral(arguments[index]))
            {
                value = "true"
            } else if index < arguments.count {
                value = arguments[index]
                index += 1
            } else {
                throw ConfigurationError(
                    code: .missingValue, key: name, source: .commandLine(flag: flag),
                    detail: "expects a value")
            }
            if name == "config", keys["config"] == nil {
                result.configFile = value
                continue
            }
            guard keys[name] != nil else {
                throw ConfigurationError(
                    code: .unknownKey, key: name, source: .commandLine(flag: flag), detail: "unknown flag")
            }
            result.entries[name] = Configuration.Entry(text: value, source: .commandLine(flag: flag))
        }
        return result
    }

    private static func isBoolLiteral(_ text: String) -> Bool {
        ["true", "false", "yes", "no", "on", "off", "1", "0"].contains(text.lowercased())
    }
}
