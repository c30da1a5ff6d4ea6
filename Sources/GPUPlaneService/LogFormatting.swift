#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Where a line of text-formatted log output goes. The default is the process's standard
/// error; tests pass a closure that collects lines.
public struct LogLineSink: Sendable {
    private let writeLine: @Sendable (String) -> Void

    /// A sink that hands each finished line (without a trailing newline) to `write`.
    public init(_ write: @escaping @Sendable (String) -> Void) {
        self.writeLine = write
    }

    /// Writes each line, newline-terminated, to file descriptor 2 with one `write(2)` call,
    /// so lines from concurrent loggers do not interleave.
    public static let standardError = LogLineSink { line in
        var bytes = Array(line.utf8)
        bytes.append(UInt8(ascii: "\n"))
        bytes.withUnsafeBytes { raw in
            guard let base = raw.baseAddress else { return }
            var offset = 0
            while offset < raw.count {
                let written = Glibc.write(STDERR_FILENO, base + offset, raw.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    return
                }
                offset += written
            }
        }
    }

    /// Writes one line.
    public func write(_ line: String) { writeLine(line) }
}

/// Shared rendering of log events: metadata merging and flattening, the stderr line format,
/// and the mapping of levels to syslog priorities.
enum LogFormatting {
    /// Provider metadata, then the handler's, then the call's own; later wins.
    static func mergedMetadata(
        provider: Logger.MetadataProvider?, handler: Logger.Metadata, event: Logger.Metadata?
    ) -> Logger.Metadata {
        var merged = provider?.get() ?? [:]
        merged.merge(handler) { $1 }
        if let event { merged.merge(event) { $1 } }
        return merged
    }

    /// Flattens nested dictionaries into dotted keys (`gpu: [uuid: x]` → `gpu.uuid`), sorted by key.
    static func flatten(_ metadata: Logger.Metadata) -> [(key: String, value: String)] {
        var out: [(key: String, value: String)] = []
        func visit(_ prefix: String, _ value: Logger.MetadataValue) {
            switch value {
            case .dictionary(let nested) where !nested.isEmpty:
                for (key, inner) in nested { visit(prefix + "." + key, inner) }
            default:
                out.append((prefix, render(value)))
            }
        }
        for (key, value) in metadata { visit(key, value) }
        return out.sorted { $0.key < $1.key }
    }

    static func render(_ value: Logger.MetadataValue) -> String {
        switch value {
        case .string(let string): return string
        case .stringConvertible(let convertible): return convertible.description
        case .array, .dictionary: return value.description
        }
    }

    /// `timestamp level label: message key=value…`, values quoted when they contain spaces,
    /// quotes, `=` or line breaks, or are empty.
    static func stderrLine(
        level: Logger.Level, label: String, message: String,
        metadata: [(key: String, value: String)], timestamp: String = timestamp()
    ) -> String {
        var line = "\(timestamp) \(level.rawValue) \(label): \(message)"
        for (key, value) in metadata {
            line += " \(key)=\(quoteIfNeeded(value))"
        }
        return line
    }

    static func quoteIfNeeded(_ value: String) -> String {
        let needsQuotes =
            value.isEmpty
            || value.unicodeScalars.contains { scalar in
                scalar == " " || scalar == "\"" || scalar == "=" || scalar == "\\"
                    || scalar.properties.generalCategory == .control
            }
        guard needsQuotes else { return value }
        var quoted = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": quoted += "\\\""
            case "\\": quoted += "\\\\"
            case "\n": quoted += "\\n"
            case "\r": quoted += "\\r"
            case "\t": quoted += "\\t"
            default: quoted.unicodeScalars.append(scalar)
            }
        }
        return quoted + "\""
    }

    /// UTC wall-clock time with milliseconds: `2026-11-22T19:30:00.123Z`.
    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = now.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        var buffer = [CChar](repeating: 0, count: 32)
        let count = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S", &parts)
        let prefix = String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let millis = Int(now.tv_nsec / 1_000_000)
        let padded = millis < 10 ? "00\(millis)" : millis < 100 ? "0\(millis)" : "\(millis)"
        return "\(prefix).\(padded)Z"
    }
}

extension Logger.Level {
    /// The syslog priority journald stores in `PRIORITY`: 0 emerg … 7 debug.
    ///
    /// `trace` and `debug` → 7, `info` → 6, `notice` → 5, `warning` → 4, `error` → 3,
    /// `critical` → 2. swift-log has no levels for 0 (emerg) and 1 (alert).
    public var syslogPriority: Int {
        switch self {
        case .trace, .debug: return 7
        case .info: return 6
        case .notice: return 5
        case .warning: return 4
        case .error: return 3
        case .critical: return 2
        }
    }
}
