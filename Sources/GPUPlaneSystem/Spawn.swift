import CSystemShim

#if canImport(Glibc)
import Glibc
#endif

/// Starting programs without Foundation's `Process`, whose launch on Linux copies each
/// `/proc/self/fd` entry's whole 256-byte name field and so reads past the end of the
/// directory buffer: with many descriptors open the read can cross into an unmapped page and
/// crash the process (seen in the test suite, in `Process.run()`, with 1,400 descriptors open).
/// Here the child gets its three standard streams and nothing else (`closefrom` in the spawn),
/// the usual signals at their defaults, and a process group of its own.
public enum Spawn {
    /// Why a program could not be started.
    public struct Failure: Error, CustomStringConvertible, Sendable {
        /// The program.
        public let path: String
        /// The errno value.
        public let code: Int32
        public var description: String { "cannot start \(path): \(String(cString: strerror(code)))" }
    }

    /// Starts `path` (looked up in `PATH` when it has no `/`) with `arguments` and exactly
    /// `environment`, with `stdin`, `stdout` and `stderr` as its standard streams.
    public static func start(
        _ path: String, _ arguments: [String], environment: [String: String], stdin: Int32, stdout: Int32, stderr: Int32
    ) throws(Failure) -> pid_t {
        var pid = pid_t()
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        // ETXTBSY: the program was written a moment ago and another thread's child, forked
        // before the writer closed it, still holds it open for writing until that child execs
        // (a test copying a binary while other tests start processes). Nothing started; the
        // descriptor goes within milliseconds, so try again for a while, as Go's os/exec does.
        var rc: Int32 = 0
        for attempt in 0..<50 {
            rc = gp_spawn(&pid, path, argv, envp, path.contains("/") ? 0 : 1, stdin, stdout, stderr)
            guard rc == ETXTBSY else { break }
            usleep(UInt32(min(attempt + 1, 10)) * 2_000)
        }
        guard rc == 0 else { throw Failure(path: path, code: rc) }
        return pid
    }

    /// The exit status of `pid` when it has ended (reaping it): the exit code, or 128 plus the
    /// signal that ended it; nil while it runs; -1 when it is no child to wait for (already
    /// reaped). Only for children started by ``start``.
    public static func status(_ pid: pid_t, wait: Bool = false) -> Int32? {
        var status: Int32 = 0
        while true {
            let result = waitpid(pid, &status, wait ? 0 : WNOHANG)
            if result == -1 && errno == EINTR { continue }
            if result == 0 { return nil }
            guard result == pid else { return -1 }
            let signal = status & 0x7F
            return signal == 0 ? (status >> 8) & 0xFF : 128 + signal
        }
    }
}
