import CSystemd
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// A swift-log handler that writes structured entries to journald with `sd_journal_sendv`.
///
/// Each entry carries `MESSAGE`, `PRIORITY` (syslog 0–7, see ``Logging/Logger/Level/syslogPriority``),
/// `SYSLOG_IDENTIFIER`, `LOGGER` (the logger's label), `CODE_FILE`, `CODE_LINE`, `CODE_FUNC`,
/// `GPUPLANE_ERROR` when the call passed an error, and one `GPUPLANE_<KEY>` field per metadata
/// key (see ``JournalField/name(forMetadataKey:)``). Values may span lines.
///
/// When the journal socket is absent, or `sd_journal_sendv` fails (journald not listening, a
/// stale socket file), the entry is written as one text line to ``LogLineSink`` instead, in
/// the format of ``StderrLogHandler``. The check runs on every entry, so a journald that starts
/// or restarts later is picked up without restarting the daemon.
///
/// libsystemd always sends to `/run/systemd/journal/socket`; `socketPath` only decides whether
/// journald is tried at all. Point it somewhere that does not exist to force the fallback.
public struct JournaldLogHandler: LogHandler {
    /// Where journald listens for native-protocol datagrams, and the only place libsystemd sends.
    public static let defaultSocketPath = "/run/systemd/journal/socket"

    /// The logger's label, written as `LOGGER`.
    public let label: String
    /// The `SYSLOG_IDENTIFIER` of every entry, e.g. `gpuplane-scheduler`; `journalctl -t` filters on it.
    public let identifier: String
    /// The socket whose presence means journald is tried.
    public let socketPath: String
    /// Where entries go when journald cannot take them.
    public let fallback: LogLineSink

    /// The handler's own metadata, merged under each call's metadata.
    public var metadata: Logger.Metadata = [:]
    /// The lowest level that is written.
    public var logLevel: Logger.Level
    /// Contextual metadata (task locals, tracing) merged under the handler's metadata.
    public var metadataProvider: Logger.MetadataProvider?

    /// A handler for the logger `label`, writing entries tagged with `identifier`.
    public init(
        label: String, identifier: String, level: Logger.Level = .info,
        socketPath: String = JournaldLogHandler.defaultSocketPath,
        fallback: LogLineSink = .standardError,
        metadataProvider: Logger.MetadataProvider? = nil
    ) {
        self.label = label
        self.identifier = identifier
        self.logLevel = level
        self.socketPath = socketPath
        self.fallback = fallback
        self.metadataProvider = metadataProvider
    }

    /// Reads or writes one key of the handler's metadata.
    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// Writes one entry to journald, or to the fallback sink.
    public func log(event: LogEvent) {
        var merged = LogFormatting.mergedMetadata(
            provider: metadataProvider, handler: metadata, event: event.metadata)
        if let error = event.error { merged["error"] = .string("\(error)") }
        let flat = LogFormatting.flatten(merged)
        let message = event.message.description

        if JournalSocket.isAvailable(at: socketPath) {
            var fields = [
                "MESSAGE=\(message)",
                "PRIORITY=\(event.level.syslogPriority)",
                "SYSLOG_IDENTIFIER=\(identifier)",
                "LOGGER=\(label)",
                "CODE_FILE=\(event.file)",
                "CODE_LINE=\(event.line)",
                "CODE_FUNC=\(event.function)",
            ]
            for (key, value) in flat {
                fields.append("\(JournalField.name(forMetadataKey: key))=\(value)")
            }
            if JournalSocket.send(fields) { return }
        }
        fallback.write(
            LogFormatting.stderrLine(level: event.level, label: label, message: message, metadata: flat))
    }
}

/// How metadata keys become journald field names.
public enum JournalField {
    /// The prefix of every metadata field.
    public static let metadataPrefix = "GPUPLANE_"
    /// journald ignores fields whose names are longer than this.
    public static let maximumNameLength = 64

    /// `node` → `GPUPLANE_NODE`, `gpu.uuid` → `GPUPLANE_GPU_UUID`, `max-batch` → `GPUPLANE_MAX_BATCH`.
    ///
    /// ASCII letters are uppercased, every character outside `[A-Z0-9_]` becomes `_`, and the
    /// result is cut to 64 characters. The prefix keeps names from starting with `_` (reserved
    /// for fields journald sets itself) or a digit. Nested metadata dictionaries arrive here
    /// already joined with dots, so `gpu: [uuid: …]` also lands in `GPUPLANE_GPU_UUID`.
    public static func name(forMetadataKey key: String) -> String {
        var name = metadataPrefix
        if key.isEmpty { return name + "UNNAMED" }
        for scalar in key.unicodeScalars {
            switch scalar {
            case "a"..."z":
                name.unicodeScalars.append(Unicode.Scalar(scalar.value - 32) ?? "_")
            case "A"..."Z", "0"..."9", "_":
                name.unicodeScalars.append(scalar)
            default:
                name.unicodeScalars.append("_")
            }
        }
        return String(name.prefix(maximumNameLength))
    }
}

/// The journal's native-protocol socket, through libsystemd.
enum JournalSocket {
    /// Whether `path` exists and is a socket.
    static func isAvailable(at path: String) -> Bool {
        var info = stat()
        guard stat(path, &info) == 0 else { return false }
        return (info.st_mode & S_IFMT) == S_IFSOCK
    }

    /// Sends one entry of `FIELD=value` strings with `sd_journal_sendv`. Values may contain
    /// newlines: libsystemd switches to the binary-safe encoding for them. True on success.
    static func send(_ fields: [String]) -> Bool {
        let total = fields.reduce(0) { $0 + $1.utf8.count }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(total, 1), alignment: 1)
        defer { buffer.deallocate() }
        guard let base = buffer.baseAddress else { return false }
        var vectors: [iovec] = []
        vectors.reserveCapacity(fields.count)
        var offset = 0
        for field in fields {
            let count = field.utf8.count
            UnsafeMutableRawBufferPointer(rebasing: buffer[offset..<(offset + count)])
                .copyBytes(from: field.utf8)
            vectors.append(iovec(iov_base: base + offset, iov_len: count))
            offset += count
        }
        return sd_journal_sendv(vectors, Int32(vectors.count)) >= 0
    }
}
