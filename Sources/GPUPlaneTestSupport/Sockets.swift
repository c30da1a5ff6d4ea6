import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Plain socket helpers for the tests' fault-injecting proxies.
public enum TestSockets {
    /// Sends all of `bytes` on `fd` (no SIGPIPE); false once the peer is gone.
    public static func sendAll(_ fd: Int32, _ bytes: ArraySlice<UInt8>) -> Bool {
        var offset = bytes.startIndex
        while offset < bytes.endIndex {
            let n = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            offset += n
        }
        return true
    }

    /// Accepts connections on `listener` on a thread named `name` until the listener is
    /// closed (shut down), handing each to `serve` on a thread of its own.
    public static func startAccepting(_ listener: Int32, name: String, serve: @escaping @Sendable (Int32) -> Void) {
        let accepting = Thread {
            while true {
                let client = accept(listener, nil, nil)
                if client < 0 {
                    if errno == EINTR { continue }
                    return
                }
                Thread { serve(client) }.start()
            }
        }
        accepting.name = name
        accepting.start()
    }
}
