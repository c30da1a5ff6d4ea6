#if canImport(Glibc)
import Glibc
#endif

/// Runs a host tool (`ip`, `iptables`, `iptables-restore`) to its end with posix_spawn, its
/// standard output and error captured and `input` on its standard input; the agent's
/// Foundation has no `Process`. Blocking: call it off the cooperative pool (``BlockingCall``).
enum HostCommand {
    /// The tool's combined output; throws ``PodNetworkError`` when it cannot start or exits
    /// non-zero (with its output).
    @discardableResult
    static func run(_ executable: String, _ arguments: [String], input: String? = nil) throws(PodNetworkError) -> String {
        var output: [Int32] = [-1, -1]
        var stdin: [Int32] = [-1, -1]
        guard pipe(&output) == 0, pipe(&stdin) == 0 else {
            throw PodNetworkError(message: "cannot make a pipe for \(executable): \(String(cString: strerror(errno)))")
        }
        for fd in output + stdin { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, stdin[0], 0)
        posix_spawn_file_actions_adddup2(&actions, output[1], 1)
        posix_spawn_file_actions_adddup2(&actions, output[1], 2)
        var argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) }
        argv.append(nil)
        defer { for pointer in argv { free(pointer) } }
        var environment: [UnsafeMutablePointer<CChar>?] = [strdup("PATH=/usr/sbin:/usr/bin:/sbin:/bin"), strdup("LC_ALL=C")]
        environment.append(nil)
        defer { for pointer in environment { free(pointer) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, executable, &actions, nil, argv, environment)
        close(output[1])
        close(stdin[0])
        guard spawned == 0 else {
            close(output[0])
            close(stdin[1])
            throw PodNetworkError(message: "cannot run \(executable): \(String(cString: strerror(spawned)))")
        }
        if let input {
            let bytes = Array(input.utf8)
            var done = 0
            while done < bytes.count {
                let n = bytes.withUnsafeBytes { write(stdin[1], $0.baseAddress! + done, bytes.count - done) }
                if n <= 0 { break }
                done += n
            }
        }
        close(stdin[1])
        var text: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(output[0], &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            text.append(contentsOf: buffer[0..<n])
        }
        close(output[0])
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let words = String(decoding: text, as: UTF8.self)
        // WIFEXITED && WEXITSTATUS == 0
        guard status & 0x7f == 0, (status >> 8) & 0xff == 0 else {
            throw PodNetworkError(
                message: "\(executable) \(arguments.joined(separator: " ")) failed (status \(status)): \(words.prefix(2000))")
        }
        return words
    }
}
