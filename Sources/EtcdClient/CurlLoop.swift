import CCurl
import CCurlShim
import Foundation

/// What one HTTP exchange asks of the loop.
struct HTTPRequest: Sendable {
    var url: String
    var body: Data
    var headers: [String]
    /// Total deadline in milliseconds; 0 for none (streams).
    var timeoutMs: Int
    var connectTimeoutMs: Int
    var tls: Etcd.Configuration.TLS?
}

/// A finished exchange.
struct HTTPResponse: Sendable {
    var status: Int
    var body: Data
}

/// How a transfer ended.
enum TransferOutcome: Sendable {
    case completed(HTTPResponse)
    /// libcurl failed. `reachedServer` is false only when the request provably never left
    /// (no connection could be made), so even a non-idempotent request may be sent again.
    case failed(code: Int, message: String, reachedServer: Bool, timedOut: Bool)
    case cancelled
}

/// One easy handle and what it reports to. Touched only on the loop thread, except
/// `cancelRequested`, which the lock guards.
final class CurlTransfer: @unchecked Sendable {
    let request: HTTPRequest
    /// For streams: called on the loop thread with each chunk of a 200 answer's body.
    let onData: (@Sendable (UnsafeRawBufferPointer) -> Void)?
    let completion: @Sendable (TransferOutcome) -> Void

    fileprivate var easy: UnsafeMutableRawPointer?
    fileprivate var headerList: UnsafeMutablePointer<curl_slist>?
    fileprivate var buffer = Data()
    fileprivate var status = 0
    fileprivate var finished = false
    fileprivate var cancelRequested = false  // guarded by CurlLoop.lock

    init(
        request: HTTPRequest, onData: (@Sendable (UnsafeRawBufferPointer) -> Void)? = nil,
        completion: @escaping @Sendable (TransferOutcome) -> Void
    ) {
        self.request = request
        self.onData = onData
        self.completion = completion
    }

    fileprivate func received(_ bytes: UnsafeRawBufferPointer) {
        guard let onData else {
            buffer.append(contentsOf: bytes)
            return
        }
        if status == 0, let easy {
            var code = 0
            _ = gp_easy_getinfo_long(easy, CURLINFO_RESPONSE_CODE, &code)
            status = code
        }
        if status == 200 { onData(bytes) } else { buffer.append(contentsOf: bytes) }
    }
}

/// Counters of a loop, for tests and benchmarks.
public struct TransportStatistics: Sendable, Hashable {
    /// Transfers that finished (successfully or not).
    public var transfers: Int
    /// New TCP connections libcurl had to open (the rest reused a pooled connection).
    public var connectionsOpened: Int
}

private let curlGlobalInit: Void = {
    _ = curl_global_init(gp_curl_global_all())
}()

/// Drives every transfer of one client from one `curl_multi` handle on one dedicated thread.
///
/// libcurl's easy calls block, so none runs on Swift's cooperative pool: callers hand
/// transfers over through a locked queue and `curl_multi_wakeup`, and get their outcome through
/// a callback made on this thread. The multi handle's connection cache gives connection reuse.
final class CurlLoop: @unchecked Sendable {
    private let multi: UnsafeMutableRawPointer
    private let lock = NSLock()
    private var incoming: [Command] = []  // guarded by lock
    private var stopping = false  // guarded by lock
    private var stats = TransportStatistics(transfers: 0, connectionsOpened: 0)  // guarded by lock
    private var active: [UnsafeMutableRawPointer: CurlTransfer] = [:]  // loop thread only

    private enum Command {
        case add(CurlTransfer)
        case cancel(CurlTransfer)
    }

    init(name: String) {
        _ = curlGlobalInit
        guard let multi = curl_multi_init() else { fatalError("curl_multi_init failed") }
        self.multi = multi
        _ = gp_multi_setopt_long(multi, CURLMOPT_MAXCONNECTS, 64)
        let thread = Thread { [self] in self.run() }
        thread.name = name
        thread.start()
    }

    var statistics: TransportStatistics { lock.withLock { stats } }

    /// Hands a transfer to the loop. Its completion is called exactly once, on the loop thread.
    func submit(_ transfer: CurlTransfer) {
        // Wake-ups happen under the lock, and the loop frees the multi handle under it after
        // `stopping` is set, so no wake-up can reach a freed handle.
        let accepted = lock.withLock { () -> Bool in
            if stopping { return false }
            incoming.append(.add(transfer))
            curl_multi_wakeup(multi)
            return true
        }
        if !accepted {
            transfer.completion(.failed(code: -1, message: "client shut down", reachedServer: false, timedOut: false))
        }
    }

    /// Aborts a transfer; its completion reports `.cancelled` unless it already finished.
    func cancel(_ transfer: CurlTransfer) {
        lock.withLock {
            transfer.cancelRequested = true
            guard !stopping else { return }
            incoming.append(.cancel(transfer))
            curl_multi_wakeup(multi)
        }
    }

    /// Stops the thread; transfers still running end as cancelled.
    func shutdown() {
        lock.withLock {
            guard !stopping else { return }
            stopping = true
            curl_multi_wakeup(multi)
        }
    }

    private func run() {
        var running: Int32 = 0
        while true {
            let (commands, stop) = lock.withLock { () -> ([Command], Bool) in
                defer { incoming.removeAll(keepingCapacity: true) }
                return (incoming, stopping)
            }
            for command in commands {
                switch command {
                case .add(let t):
                    if lock.withLock({ t.cancelRequested }) || stop {
                        finish(t, .cancelled)
                    } else {
                        start(t)
                    }
                case .cancel(let t):
                    if let easy = t.easy, active[easy] != nil { finish(t, .cancelled) }
                }
            }
            if stop {
                for t in Array(active.values) { finish(t, .cancelled) }
                break
            }
            _ = curl_multi_perform(multi, &running)
            var queued: Int32 = 0
            while let msg = curl_multi_info_read(multi, &queued) {
                guard msg.pointee.msg == CURLMSG_DONE, let easy = msg.pointee.easy_handle,
                    let t = active[easy]
                else { continue }
                let code = gp_curl_msg_result(msg)
                finish(t, outcome(of: t, easy: easy, code: code))
            }
            _ = curl_multi_poll(multi, nil, 0, 1000, nil)
        }
        lock.withLock { _ = curl_multi_cleanup(multi) }
    }

    private func start(_ t: CurlTransfer) {
        guard let easy = curl_easy_init() else {
            finish(t, .failed(code: -1, message: "curl_easy_init failed", reachedServer: false, timedOut: false))
            return
        }
        t.easy = easy
        let r = t.request
        r.url.withCString { _ = gp_easy_setopt_ptr(easy, CURLOPT_URL, $0) }
        _ = gp_easy_setopt_long(easy, CURLOPT_NOSIGNAL, 1)
        _ = gp_easy_setopt_long(easy, CURLOPT_POST, 1)
        _ = gp_easy_setopt_off_t(easy, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(r.body.count))
        r.body.withUnsafeBytes { _ = gp_easy_setopt_ptr(easy, CURLOPT_COPYPOSTFIELDS, $0.baseAddress) }
        _ = gp_easy_setopt_long(easy, CURLOPT_CONNECTTIMEOUT_MS, r.connectTimeoutMs)
        if r.timeoutMs > 0 { _ = gp_easy_setopt_long(easy, CURLOPT_TIMEOUT_MS, r.timeoutMs) }
        _ = gp_easy_setopt_long(easy, CURLOPT_TCP_KEEPALIVE, 1)
        _ = gp_easy_setopt_long(easy, CURLOPT_TCP_KEEPIDLE, 10)
        _ = gp_easy_setopt_long(easy, CURLOPT_TCP_KEEPINTVL, 5)
        _ = gp_easy_setopt_long(easy, CURLOPT_TCP_NODELAY, 1)
        if let tls = r.tls {
            if let ca = tls.caFile { ca.withCString { _ = gp_easy_setopt_ptr(easy, CURLOPT_CAINFO, $0) } }
            if let cert = tls.certFile { cert.withCString { _ = gp_easy_setopt_ptr(easy, CURLOPT_SSLCERT, $0) } }
            if let key = tls.keyFile { key.withCString { _ = gp_easy_setopt_ptr(easy, CURLOPT_SSLKEY, $0) } }
        }
        var list: UnsafeMutablePointer<curl_slist>? = nil
        for header in ["Content-Type: application/json", "Expect:"] + r.headers {
            list = curl_slist_append(list, header)
        }
        t.headerList = list
        _ = gp_easy_setopt_ptr(easy, CURLOPT_HTTPHEADER, list)
        _ = gp_easy_setopt_ptr(easy, CURLOPT_WRITEDATA, Unmanaged.passUnretained(t).toOpaque())
        _ = gp_easy_setopt_write_function(easy, CURLOPT_WRITEFUNCTION) { ptr, size, count, userdata in
            guard let userdata else { return 0 }
            let transfer = Unmanaged<CurlTransfer>.fromOpaque(userdata).takeUnretainedValue()
            let n = size * count
            transfer.received(UnsafeRawBufferPointer(start: ptr, count: n))
            return n
        }
        active[easy] = t
        let rc = curl_multi_add_handle(multi, easy)
        if rc != CURLM_OK {
            finish(t, .failed(code: -1, message: "curl_multi_add_handle: \(rc)", reachedServer: false, timedOut: false))
        }
    }

    private func outcome(of t: CurlTransfer, easy: UnsafeMutableRawPointer, code: CURLcode) -> TransferOutcome {
        if code == CURLE_OK {
            var status = 0
            _ = gp_easy_getinfo_long(easy, CURLINFO_RESPONSE_CODE, &status)
            return .completed(HTTPResponse(status: status, body: t.buffer))
        }
        var sent = 0
        _ = gp_easy_getinfo_long(easy, CURLINFO_REQUEST_SIZE, &sent)
        let neverConnected =
            code == CURLE_COULDNT_CONNECT || code == CURLE_COULDNT_RESOLVE_HOST
            || code == CURLE_COULDNT_RESOLVE_PROXY || code == CURLE_SSL_CONNECT_ERROR
        let message = String(cString: curl_easy_strerror(code))
        return .failed(
            code: Int(code.rawValue), message: message, reachedServer: !neverConnected && sent > 0,
            timedOut: code == CURLE_OPERATION_TIMEDOUT)
    }

    private func finish(_ t: CurlTransfer, _ outcome: TransferOutcome) {
        guard !t.finished else { return }
        t.finished = true
        var connects = 0
        if let easy = t.easy {
            _ = gp_easy_getinfo_long(easy, CURLINFO_NUM_CONNECTS, &connects)
            if active.removeValue(forKey: easy) != nil { curl_multi_remove_handle(multi, easy) }
            curl_easy_cleanup(easy)
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
