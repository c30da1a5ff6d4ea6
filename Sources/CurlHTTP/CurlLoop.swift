import CCurl
import CCurlShim
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneSystem
#if canImport(Glibc)
import Glibc
#endif

/// One easy handle and what it reports to. Touched only on the loop thread, except
/// `cancelRequested`, which the loop's lock guards.
final class CurlTransfer: @unchecked Sendable {
    let request: CurlHTTP.Request
    /// For streams: called on the loop thread with each chunk of a 2xx answer's body (of any
    /// answer's body when ``onHead`` is set).
    let onData: (@Sendable (UnsafeRawBufferPointer) -> Void)?
    /// For exchanges: called on the loop thread once the final answer's status and headers are
    /// in, before its first body byte.
    let onHead: (@Sendable (Int, [CurlHTTP.Header]) -> Void)?
    /// Called exactly once, on the loop thread.
    let completion: @Sendable (Result<CurlHTTP.Response, CurlHTTPError>) -> Void

    fileprivate var easy: UnsafeMutableRawPointer?
    fileprivate var headerList: UnsafeMutablePointer<curl_slist>?
    fileprivate var buffer = Data()
    fileprivate var status = 0
    fileprivate var headers: [CurlHTTP.Header] = []
    fileprivate var finished = false
    fileprivate var headDelivered = false
    fileprivate var cancelRequested = false  // guarded by CurlLoop.lock

    init(
        request: CurlHTTP.Request, onData: (@Sendable (UnsafeRawBufferPointer) -> Void)? = nil,
        onHead: (@Sendable (Int, [CurlHTTP.Header]) -> Void)? = nil,
        completion: @escaping @Sendable (Result<CurlHTTP.Response, CurlHTTPError>) -> Void
    ) {
        self.request = request
        self.onData = onData
        self.onHead = onHead
        self.completion = completion
    }

    fileprivate func received(_ bytes: UnsafeRawBufferPointer) {
        if let onData, onHead != nil || (200..<300).contains(status) {
            deliverHead()
            onData(bytes)
        } else {
            buffer.append(contentsOf: bytes)
        }
    }

    /// One header line as libcurl hands it over: a status line starts a new answer (after
    /// `100 Continue` or a redirect), the rest are fields.
    fileprivate func receivedHeader(_ bytes: UnsafeRawBufferPointer) {
        // Byte-level: this runs for every header line of every response, and Foundation's
        // trimming (NSString bridging on Linux) was a measurable share of the api-server's CPU.
        let (start, end) = Self.trimmed(bytes, 0, bytes.count)
        guard start < end else {
            // The blank line ending a header block: the head of a final (not 1xx) answer is in.
            if status >= 200 { deliverHead() }
            return
        }
        let line = UnsafeRawBufferPointer(rebasing: bytes[start..<end])
        if line.starts(with: Self.httpPrefix) {
            // "HTTP/1.1 200 OK": the status is the second word.
            guard let space = line.firstIndex(of: 0x20) else { return }
            var code = 0
            var digits = 0
            for byte in line[(space + 1)...] {
                guard byte >= 0x30, byte <= 0x39 else { break }
                code = code * 10 + Int(byte - 0x30)
                digits += 1
            }
            if digits > 0 { status = code }
            headers.removeAll()
        } else if let colon = line.firstIndex(of: 0x3A) {
            let (valueStart, valueEnd) = Self.trimmed(line, colon + 1, line.count)
            headers.append(CurlHTTP.Header(
                String(decoding: UnsafeRawBufferPointer(rebasing: line[..<colon]), as: UTF8.self),
                String(decoding: UnsafeRawBufferPointer(rebasing: line[valueStart..<valueEnd]), as: UTF8.self)))
        }
    }

    /// Hands the final answer's status and headers to ``onHead``, once.
    fileprivate func deliverHead() {
        guard let onHead, !headDelivered else { return }
        headDelivered = true
        onHead(status, headers)
    }

    private static let httpPrefix: [UInt8] = Array("HTTP/".utf8)

    /// `start..<end` of `bytes` without leading and trailing spaces, tabs, CR and LF.
    private static func trimmed(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> (Int, Int) {
        func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 || byte == 0x0D || byte == 0x0A }
        var start = start
        var end = end
        while start < end, isSpace(bytes[start]) { start += 1 }
        while end > start, isSpace(bytes[end - 1]) { end -= 1 }
        return (start, end)
    }
}

private let curlGlobalInit: Void = {
    _ = curl_global_init(gp_curl_global_all())
}()

/// Drives every transfer of one client from one `curl_multi` handle on one dedicated thread.
///
/// libcurl's easy calls block, so none runs on Swift's cooperative pool: callers hand
/// transfers over through a locked queue and an eventfd, and get their outcome through a
/// callback made on this thread. The multi handle's connection cache gives connection reuse.
///
/// The loop waits in epoll on the sockets libcurl asks it to watch (`CURLMOPT_SOCKETFUNCTION`)
/// and runs libcurl for the ready ones only (`curl_multi_socket_action`), with libcurl's own
/// timer (`CURLMOPT_TIMERFUNCTION`) as the wait's deadline. `curl_multi_poll` and
/// `curl_multi_perform` instead walk every transfer on each wake-up: a client holding many long
/// watches (a hollow fleet's, a busy agent's) paid for all of them on every beat.
final class CurlLoop: @unchecked Sendable {
    private let multi: UnsafeMutableRawPointer
    private let poller: Int32
    private let wake: Int32
    private let lock = Lock()
    private var incoming: [Command] = []  // guarded by lock
    private var stopping = false  // guarded by lock
    private var stats = CurlHTTP.Statistics()  // guarded by lock
    private var active: [UnsafeMutableRawPointer: CurlTransfer] = [:]  // loop thread only
    /// When libcurl wants `curl_multi_socket_action(CURL_SOCKET_TIMEOUT)`; nil: no timer.
    /// Set from libcurl's timer callback, which runs inside libcurl calls on the loop thread.
    fileprivate var timerDeadline: ContinuousClock.Instant?  // loop thread only
    /// Easy handles of finished transfers, reset and reused: a new handle allocates its
    /// buffers afresh (64 KB for a body's upload), and freeing them made glibc consolidate its
    /// heap on every beat of a hollow fleet.
    private var spareHandles: [UnsafeMutableRawPointer] = []  // loop thread only
    private static let maxSpareHandles = 32

    private enum Command {
        case add(CurlTransfer)
        case cancel(CurlTransfer)
    }

    init(name: String, maxConnections: Int) {
        _ = curlGlobalInit
        guard let multi = curl_multi_init() else { fatalError("curl_multi_init failed") }
        let poller = gp_poller_create()
        let wake = gp_wake_create()
        guard poller >= 0, wake >= 0, gp_poller_watch(poller, wake, 1, 0) == 0 else {
            fatalError("cannot make the HTTP client's epoll set and eventfd: errno \(errno)")
        }
        self.multi = multi
        self.poller = poller
        self.wake = wake
        _ = gp_multi_setopt_long(multi, CURLMOPT_MAXCONNECTS, maxConnections)
        // The callbacks run inside libcurl calls made on the loop thread, which holds `self`
        // until it has cleaned the multi handle up, so an unretained pointer is enough.
        let me = Unmanaged.passUnretained(self).toOpaque()
        _ = gp_multi_setopt_ptr(multi, CURLMOPT_SOCKETDATA, me)
        _ = gp_multi_setopt_socket_function(multi) { _, socket, what, loop, _ in
            guard let loop else { return -1 }
            let poller = Unmanaged<CurlLoop>.fromOpaque(loop).takeUnretainedValue().poller
            switch what {
            case Int32(CURL_POLL_REMOVE):
                gp_poller_forget(poller, socket)
                return 0
            default:
                let reading: Int32 = what & Int32(CURL_POLL_IN) != 0 ? 1 : 0
                let writing: Int32 = what & Int32(CURL_POLL_OUT) != 0 ? 1 : 0
                return gp_poller_watch(poller, socket, reading, writing) == 0 ? 0 : -1
            }
        }
        _ = gp_multi_setopt_ptr(multi, CURLMOPT_TIMERDATA, me)
        _ = gp_multi_setopt_timer_function(multi) { _, milliseconds, loop in
            guard let loop else { return -1 }
            let owner = Unmanaged<CurlLoop>.fromOpaque(loop).takeUnretainedValue()
            owner.timerDeadline = CurlLoop.deadline(in: milliseconds)
            return 0
        }
        SystemThread.start(name: name) { [self] in self.run() }
    }

    var statistics: CurlHTTP.Statistics { lock.withLock { stats } }

    /// Hands a transfer to the loop. Its completion is called exactly once, on the loop thread.
    func submit(_ transfer: CurlTransfer) {
        // Wake-ups happen under the lock, and the loop closes the eventfd under it after
        // `stopping` is set, so no wake-up can reach a closed (or reused) descriptor.
        let accepted = lock.withLock { () -> Bool in
            if stopping { return false }
            incoming.append(.add(transfer))
            gp_wake(wake)
            return true
        }
        if !accepted { transfer.completion(.failure(.shutDown)) }
    }

    /// Aborts a transfer; its completion reports `.cancelled` unless it already finished.
    func cancel(_ transfer: CurlTransfer) {
        lock.withLock {
            transfer.cancelRequested = true
            guard !stopping else { return }
            incoming.append(.cancel(transfer))
            gp_wake(wake)
        }
    }

    /// Stops the thread; transfers still running end as shut down.
    func shutdown() {
        lock.withLock {
            guard !stopping else { return }
            stopping = true
            gp_wake(wake)
        }
    }

    private func run() {
        var running: Int32 = 0
        let capacity = 256
        var fds = [Int32](repeating: 0, count: capacity)
        var flags = [Int32](repeating: 0, count: capacity)
        while true {
            let (commands, stop) = lock.withLock { () -> ([Command], Bool) in
                defer { incoming.removeAll(keepingCapacity: true) }
                return (incoming, stopping)
            }
            for command in commands {
                switch command {
                case .add(let t):
                    if stop {
                        finish(t, .failure(.shutDown))
                    } else if lock.withLock({ t.cancelRequested }) {
                        finish(t, .failure(.cancelled))
                    } else {
                        start(t)
                    }
                case .cancel(let t):
                    if let easy = t.easy, active[easy] != nil { finish(t, .failure(.cancelled)) }
                }
            }
            if stop {
                for t in Array(active.values) { finish(t, .failure(.shutDown)) }
                break
            }
            if let deadline = timerDeadline, deadline <= ContinuousClock.now {
                timerDeadline = nil
                _ = curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running)
                syncTimer()
                collectFinished()
            }
            let ready = gp_poller_wait(poller, &fds, &flags, Int32(capacity), waitMilliseconds())
            for index in 0..<Int(max(0, ready)) {
                if fds[index] == wake {
                    gp_wake_drain(wake)
                } else {
                    _ = curl_multi_socket_action(multi, fds[index], flags[index], &running)
                }
            }
            if ready > 0 { syncTimer() }
            collectFinished()
        }
        for easy in spareHandles { curl_easy_cleanup(easy) }
        spareHandles.removeAll()
        lock.withLock {
            _ = curl_multi_cleanup(multi)
            close(poller)
            close(wake)
        }
    }

    /// The moment for libcurl's timer `milliseconds` from now (nil for none). libcurl rounds
    /// the time left down to whole milliseconds, so the timer is set one later: a timer that
    /// fires before libcurl's own deadline finds nothing due, and libcurl does not name the
    /// same deadline again.
    fileprivate static func deadline(in milliseconds: Int) -> ContinuousClock.Instant? {
        if milliseconds < 0 { return nil }
        return ContinuousClock.now + .milliseconds(milliseconds == 0 ? 0 : milliseconds + 1)
    }

    /// Takes libcurl's next deadline from `curl_multi_timeout` after it ran: its timer
    /// callback is only made when that deadline changes, so a deadline that stayed the same
    /// through a run (a timer taken too early, say) would otherwise be lost, and with it the
    /// timeouts of transfers whose sockets stay quiet.
    private func syncTimer() {
        var milliseconds = 0
        guard curl_multi_timeout(multi, &milliseconds) == CURLM_OK else { return }
        timerDeadline = Self.deadline(in: milliseconds)
    }

    /// How long the loop may wait for a socket: until libcurl's timer, at most a second (the
    /// eventfd wakes it for new commands).
    private func waitMilliseconds() -> Int32 {
        guard let deadline = timerDeadline else { return 1000 }
        let left = deadline - ContinuousClock.now
        if left <= .zero { return 0 }
        let (seconds, attoseconds) = left.components
        let milliseconds = seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
        return Int32(min(1000, milliseconds))
    }

    /// Ends the transfers libcurl reports done.
    private func collectFinished() {
        var queued: Int32 = 0
        while let msg = curl_multi_info_read(multi, &queued) {
            guard msg.pointee.msg == CURLMSG_DONE, let easy = msg.pointee.easy_handle,
                let t = active[easy]
            else { continue }
            let code = gp_curl_msg_result(msg)
            finish(t, outcome(of: t, easy: easy, code: code))
        }
    }

    private func start(_ t: CurlTransfer) {
        let reused = spareHandles.popLast()
        if let reused { curl_easy_reset(reused) }
        guard let easy = reused ?? curl_easy_init() else {
            finish(t, .failure(CurlHTTPError(code: .transfer, message: "curl_easy_init failed", reachedServer: false)))
            return
        }
        t.easy = easy
        let r = t.request
        r.url.withCString { _ = gp_easy_setopt_ptr(easy, CURLOPT_URL, $0) }
        _ = gp_easy_setopt_long(easy, CURLOPT_NOSIGNAL, 1)
        if let socket = r.unixSocketPath {
            socket.withCString { _ = gp_easy_setopt_ptr(easy, CURLOPT_UNIX_SOCKET_PATH, $0) }
        }
        switch r.method {
        case .get:
            _ = gp_easy_setopt_long(easy, CURLOPT_HTTPGET, 1)
        case .head:
            _ = gp_easy_setopt_long(easy, CURLOPT_NOBODY, 1)
        case .post:
            _ = gp_easy_setopt_long(easy, CURLOPT_POST, 1)
        default:
            r.method.rawValue.withCString { _ = gp_easy_setopt_ptr(easy, CURLOPT_CUSTOMREQUEST, $0) }
        }
        if r.method == .post || r.body != nil {
            let body = r.body ?? Data()
            _ = gp_easy_setopt_off_t(easy, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.count))
            body.withUnsafeBytes { _ = gp_easy_setopt_ptr(easy, CURLOPT_COPYPOSTFIELDS, $0.baseAddress) }
        }
        _ = gp_easy_setopt_long(easy, CURLOPT_CONNECTTIMEOUT_MS, r.connectTimeout.curlMilliseconds)
        if let timeout = r.timeout, timeout > .zero {
            _ = gp_easy_setopt_long(easy, CURLOPT_TIMEOUT_MS, timeout.curlMilliseconds)
        }
        if r.unixSocketPath == nil {
            _ = gp_easy_setopt_long(easy, CURLOPT_TCP_KEEPALIVE, 1)
            _ = gp_easy_setopt_long(easy, CURLOPT_TCP_KEEPIDLE, 10)
            _ = gp_easy_setopt_long(easy, CURLOPT_TCP_KEEPINTVL, 5)
            _ = gp_easy_setopt_long(easy, CURLOPT_TCP_NODELAY, 1)
        }
        if let tls = r.tls {
            if let ca = tls.caFile { ca.withCString { _ = gp_easy_setopt_ptr(easy, CURLOPT_CAINFO, $0) } }
            if let cert = tls.certFile { cert.withCString { _ = gp_easy_setopt_ptr(easy, CURLOPT_SSLCERT, $0) } }
            if let key = tls.keyFile { key.withCString { _ = gp_easy_setopt_ptr(easy, CURLOPT_SSLKEY, $0) } }
        }
        var list: UnsafeMutablePointer<curl_slist>? = nil
        for header in r.headers { list = curl_slist_append(list, "\(header.name): \(header.value)") }
        list = curl_slist_append(list, "Expect:")
        t.headerList = list
        _ = gp_easy_setopt_ptr(easy, CURLOPT_HTTPHEADER, list)
        let me = Unmanaged.passUnretained(t).toOpaque()
        _ = gp_easy_setopt_ptr(easy, CURLOPT_WRITEDATA, me)
        _ = gp_easy_setopt_write_function(easy, CURLOPT_WRITEFUNCTION) { ptr, size, count, userdata in
            guard let userdata else { return 0 }
            let transfer = Unmanaged<CurlTransfer>.fromOpaque(userdata).takeUnretainedValue()
            let n = size * count
            transfer.received(UnsafeRawBufferPointer(start: ptr, count: n))
            return n
        }
        _ = gp_easy_setopt_ptr(easy, CURLOPT_HEADERDATA, me)
        _ = gp_easy_setopt_write_function(easy, CURLOPT_HEADERFUNCTION) { ptr, size, count, userdata in
            guard let userdata else { return 0 }
            let transfer = Unmanaged<CurlTransfer>.fromOpaque(userdata).takeUnretainedValue()
            let n = size * count
            transfer.receivedHeader(UnsafeRawBufferPointer(start: ptr, count: n))
            return n
        }
        active[easy] = t
        let rc = curl_multi_add_handle(multi, easy)
        if rc != CURLM_OK {
            finish(t, .failure(CurlHTTPError(code: .transfer, message: "curl_multi_add_handle: \(rc)", reachedServer: false)))
        }
    }

    private func outcome(
        of t: CurlTransfer, easy: UnsafeMutableRawPointer, code: CURLcode
    ) -> Result<CurlHTTP.Response, CurlHTTPError> {
        if code == CURLE_OK {
            var status = 0
            _ = gp_easy_getinfo_long(easy, CURLINFO_RESPONSE_CODE, &status)
            let response = CurlHTTP.Response(status: status, headers: t.headers, body: t.buffer)
            if t.onData != nil, t.onHead == nil, !response.isSuccess {
                return .failure(
                    CurlHTTPError(
                        code: .httpStatus, message: "HTTP \(status)", reachedServer: true, response: response))
            }
            return .success(response)
        }
        var sent = 0
        _ = gp_easy_getinfo_long(easy, CURLINFO_REQUEST_SIZE, &sent)
        let neverConnected =
            code == CURLE_COULDNT_CONNECT || code == CURLE_COULDNT_RESOLVE_HOST
            || code == CURLE_COULDNT_RESOLVE_PROXY || code == CURLE_SSL_CONNECT_ERROR
        let message = String(cString: curl_easy_strerror(code))
        let kind: CurlHTTPError.Code =
            code == CURLE_OPERATION_TIMEDOUT ? .timeout : neverConnected ? .couldNotConnect : .transfer
        return .failure(
            CurlHTTPError(
                code: kind, message: message, curlCode: Int(code.rawValue),
                reachedServer: !neverConnected && sent > 0))
    }

    private func finish(_ t: CurlTransfer, _ outcome: Result<CurlHTTP.Response, CurlHTTPError>) {
        guard !t.finished else { return }
        t.finished = true
        var connects = 0
        if let easy = t.easy {
            _ = gp_easy_getinfo_long(easy, CURLINFO_NUM_CONNECTS, &connects)
            if active.removeValue(forKey: easy) != nil { curl_multi_remove_handle(multi, easy) }
            if spareHandles.count < Self.maxSpareHandles {
                spareHandles.append(easy)
            } else {
                curl_easy_cleanup(easy)
            }
            t.easy = nil
        }
        if let list = t.headerList {
            curl_slist_free_all(list)
            t.headerList = nil
        }
        lock.withLock {
            stats.transfers += 1
            stats.connectionsOpened += connects
        }
        t.completion(outcome)
    }
}
