#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A file that could not be read, with the operating system's reason.
public struct FileReadError: Error, CustomStringConvertible, Sendable {
    /// The path as given.
    public let path: String
    /// The `errno` of the failed call.
    public let code: Int32

    /// The reason in words, e.g. "No such file or directory".
    public var reason: String { String(cString: strerror(code)) }
    /// Whether the file does not exist (as opposed to existing but being unreadable).
    public var isMissing: Bool { code == ENOENT }
    public var description: String { "\(path): \(reason)" }
}

/// Whole-file reads for configuration, tokens and catalogs.
public enum SystemFile {
    /// The bytes of the file at `path`.
    public static func read(_ path: String) throws(FileReadError) -> [UInt8] {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw FileReadError(path: path, code: errno) }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16384)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw FileReadError(path: path, code: errno)
            }
            if count == 0 { return bytes }
            bytes.append(contentsOf: chunk[0..<count])
        }
    }

    /// The file at `path` as UTF-8 text (invalid sequences become U+FFFD).
    public static func readText(_ path: String) throws(FileReadError) -> String {
        String(decoding: try read(path), as: UTF8.self)
    }
}
