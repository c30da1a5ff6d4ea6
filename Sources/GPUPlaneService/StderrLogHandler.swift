import Logging

/// A swift-log handler that writes one text line per entry:
/// `2026-11-22T19:30:00.123Z info gpuplane-scheduler: placed replica deployment=llama replica=2`.
///
/// Metadata follows the message as `key=value`, sorted by key, nested dictionaries joined with
/// dots; values with spaces, quotes, `=`, backslashes or control characters (newlines) are
/// quoted with C-style escapes, so every entry stays on one line. This is what
/// ``JournaldLogHandler`` falls back to when journald is unavailable.
public struct StderrLogHandler: LogHandler {
    /// The logger's label, printed before the message.
    public let label: String
    /// Where lines go.
    public let output: LogLineSink
    /// The handler's own metadata, merged under each call's metadata.
    public var metadata: Logger.Metadata = [:]
    /// The lowest level that is written.
    public var logLevel: Logger.Level
    /// Contextual metadata merged under the handler's metadata.
    public var metadataProvider: Logger.MetadataProvider?

    /// A handler for the logger `label`.
    public init(
        label: String, level: Logger.Level = .info, output: LogLineSink = .standardError,
        metadataProvider: Logger.MetadataProvider? = nil
    ) {
        self.label = label
        self.logLevel = level
        self.output = output
        self.metadataProvider = metadataProvider
    }

    /// Reads or writes one key of the handler's metadata.
    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// Writes one line.
    public func log(event: LogEvent) {
        var merged = LogFormatting.mergedMetadata(
            provider: metadataProvider, handler: metadata, event: event.metadata)
        if let error = event.error { merged["error"] = .string("\(error)") }
        output.write(
            LogFormatting.stderrLine(
                level: event.level, label: label, message: event.message.description,
                metadata: LogFormatting.flatten(merged)))
    }
}
