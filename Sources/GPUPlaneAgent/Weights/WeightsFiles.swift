#if canImport(Glibc)
import Glibc
#endif

/// The few file operations the weights cache needs, on POSIX calls (the agent's Foundation is
/// FoundationEssentials): directories made and listed, trees sized and removed without
/// following symbolic links, files written and synced, renames, modification times.
enum WeightsFiles {
    /// Why a file operation failed: the path and `strerror`.
    static func failure(_ what: String, _ path: String, _ code: Int32 = errno) -> WeightsError {
        WeightsError(.storage, "cannot \(what) \(path): \(String(cString: strerror(code)))")
    }

    /// Makes `path` and its parents (mode 0755); an existing directory is fine.
    static func makeDirectories(_ path: String) throws(WeightsError) {
        var built = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            built += "/" + part
            if mkdir(built, 0o755) != 0, errno != EEXIST { throw failure("make the directory", built) }
        }
        guard isDirectory(path) else { throw WeightsError(.storage, "\(path) exists and is not a directory") }
    }

    /// The names in a directory (without `.` and `..`); empty when it cannot be read.
    static func list(_ path: String) -> [String] {
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    private static func status(_ path: String) -> stat? {
        var info = stat()
        return lstat(path, &info) == 0 ? info : nil
    }

    /// Whether `path` is a directory (not a link to one).
    static func isDirectory(_ path: String) -> Bool {
        guard let info = status(path) else { return false }
        return info.st_mode & S_IFMT == S_IFDIR
    }

    /// Whether `path` exists (following links: a host path may be a link).
    static func exists(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0
    }

    /// The bytes of the regular files under `path` (or of `path` itself).
    static func size(_ path: String) -> Int64 {
        guard let info = status(path) else { return 0 }
        switch info.st_mode & S_IFMT {
        case S_IFREG: return Int64(info.st_size)
        case S_IFDIR: return list(path).reduce(0) { $0 + size(path + "/" + $1) }
        default: return 0
        }
    }

    /// The modification time, nanoseconds since the epoch; 0 when it cannot be read.
    static func modifiedNanoseconds(_ path: String) -> Int64 {
        guard let info = status(path) else { return 0 }
        return Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec)
    }

    /// Now, nanoseconds since the epoch.
    static func nowNanoseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
    }

    /// Sets the modification time to now (the cache's "last used").
    static func touch(_ path: String) {
        _ = utimensat(AT_FDCWD, path, nil, 0)
    }

    /// Removes `path` and everything under it, never following a link.
    static func removeTree(_ path: String) {
        guard let info = status(path) else { return }
        if info.st_mode & S_IFMT == S_IFDIR {
            for name in list(path) { removeTree(path + "/" + name) }
            _ = rmdir(path)
        } else {
            _ = unlink(path)
        }
    }

    /// Renames `from` to `to` (atomic on one file system).
    static func move(_ from: String, _ to: String) throws(WeightsError) {
        guard rename(from, to) == 0 else { throw failure("rename \(from) to", to) }
    }

    /// The whole content of a small file; nil when it cannot be read.
    static func readText(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            bytes.append(contentsOf: buffer[0..<n])
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Writes `text` to `path` through a temporary file and a rename, so a reader sees the old
    /// content or the new, never part.
    static func writeAtomically(_ path: String, _ text: String) throws(WeightsError) {
        let temporary = path + ".tmp-\(UInt32.random(in: 0...UInt32.max))"
        let file = try Writer(creating: temporary)
        do {
            try file.write(Array(text.utf8))
            try file.finish()
        } catch {
            file.abandon()
            unlink(temporary)
            throw error
        }
        try move(temporary, path)
    }

    /// A file being written: created exclusively, synced and closed by ``finish()``.
    final class Writer {
        let path: String
        private var fd: Int32

        /// Creates `path` (it must not exist), mode 0644.
        init(creating path: String) throws(WeightsError) {
            self.path = path
            fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw WeightsFiles.failure("create", path) }
        }

        /// Writes all of `bytes`.
        func write(_ bytes: UnsafeRawBufferPointer) throws(WeightsError) {
            guard var base = bytes.baseAddress else { return }
            var left = bytes.count
            while left > 0 {
                let n = Glibc.write(fd, base, left)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw WeightsFiles.failure("write", path)
                }
                left -= n
                base += n
            }
        }

        /// Writes all of `bytes`.
        func write(_ bytes: [UInt8]) throws(WeightsError) {
            var failure: WeightsError?
            bytes.withUnsafeBytes { raw in
                do throws(WeightsError) { try write(raw) } catch { failure = error }
            }
            if let failure { throw failure }
        }

        /// Syncs and closes.
        func finish() throws(WeightsError) {
            defer { abandon() }
            guard fsync(fd) == 0 else { throw WeightsFiles.failure("sync", path) }
        }

        /// Closes without syncing.
        func abandon() {
            if fd >= 0 { close(fd) }
            fd = -1
        }

        deinit { abandon() }
    }
}
