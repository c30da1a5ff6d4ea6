import CurlHTTP
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import GPUPlaneSystem

/// One file's transfer into the cache: streamed to disk as it arrives, hashed on the way,
/// counted for the job's progress; sent again from the start after a failure without an
/// answer or a 5xx (a GET is idempotent), at most ``WeightsCacheSettings/attempts`` times.
struct WeightsDownload {
    let cache: WeightsCache
    let job: WeightsFetchJob
    /// Bytes of the fetch before this file (the job's progress adds this file's).
    let offset: Int64
    /// The fetch's total, when known.
    let total: Int64?

    /// What the transfer gave.
    struct Result {
        var bytes: Int64
        var sha256: String
    }

    /// GETs `url` into `path` (created; removed again on failure), following redirects (a
    /// registry may send blobs from storage elsewhere; the `Authorization` header goes only
    /// to the first host). `what` names the file in errors.
    func run(url: String, headers: [CurlHTTP.Header], to path: String, what: String) async throws(WeightsError) -> Result {
        var lastError = WeightsError(.unreachable, "\(what): no attempt made")
        for attempt in 1...max(1, cache.settings.attempts) {
            do {
                return try await once(url: url, headers: headers, to: path, what: what)
            } catch {
                unlink(path)
                lastError = error
                guard error.code == .unreachable, attempt < cache.settings.attempts, !Task.isCancelled else { throw error }
                cache.logger.warning(
                    "weights transfer failed; trying again", metadata: ["file": "\(what)", "attempt": "\(attempt)", "error": "\(error.message)"])
                try? await Task.sleep(for: .seconds(attempt))
            }
        }
        throw lastError
    }

    /// What the transfer's callbacks share (they run on the weights client's own thread).
    private final class Sink: @unchecked Sendable {
        let writer: WeightsFiles.Writer
        var hash = PortableSHA256.Hasher()
        var bytes: Int64 = 0
        var error: WeightsError?
        var cancel: (@Sendable () -> Void)?
        init(_ writer: WeightsFiles.Writer) { self.writer = writer }
    }

    /// One GET, following redirects. The body is hashed and written on the weights HTTP
    /// client's own thread as it arrives (``WeightsCache`` has a client of its own), so a
    /// large fetch takes no time from the agent's cooperative threads (heartbeats, passes).
    private func once(url: String, headers: [CurlHTTP.Header], to path: String, what: String) async throws(WeightsError) -> Result {
        var target = url
        var sendHeaders = headers
        for _ in 0..<5 {
            let request = CurlHTTP.Request(
                url: target, headers: sendHeaders, timeout: cache.settings.fileTimeout, connectTimeout: .seconds(10))
            let writer = try WeightsFiles.Writer(creating: path)
            let sink = Locked(Sink(writer))
            let (job, cache, offset, total) = (self.job, self.cache, self.offset, self.total)
            let interval = cache.settings.progressInterval
            let outcome: Swift.Result<CurlHTTP.Response, CurlHTTPError> = await withTaskCancellationHandler {
                await withCheckedContinuation { continuation in
                    let cancel = cache.http.stream(
                        request,
                        onData: { raw in
                            let (done, failed) = sink.withLock { sink -> (Int64, Bool) in
                                guard sink.error == nil else { return (sink.bytes, false) }
                                sink.hash.update(raw)
                                do throws(WeightsError) {
                                    try sink.writer.write(raw)
                                } catch {
                                    sink.error = error
                                    return (sink.bytes, true)
                                }
                                sink.bytes += Int64(raw.count)
                                return (sink.bytes, false)
                            }
                            if failed { sink.withLock { $0.cancel }?() }
                            if job.record(done: offset + done, total: total, interval: interval, now: .now) { cache.signal() }
                        },
                        completion: { continuation.resume(returning: $0) })
                    sink.withLock { $0.cancel = cancel }
                    if Task.isCancelled { cancel() }
                }
            } onCancel: {
                sink.withLock { $0.cancel }?()
            }
            let (bytes, digest, writeError) = sink.withLock { sink in (sink.bytes, sink.error == nil ? sink.hash.finalizeHex() : "", sink.error) }
            if let writeError {
                writer.abandon()
                throw writeError
            }
            switch outcome {
            case .success:
                try writer.finish()
                cache.countTransfer(bytes: bytes)
                return Result(bytes: bytes, sha256: digest)
            case .failure(let error):
                writer.abandon()
                unlink(path)
                if error.code == .httpStatus, let response = error.response {
                    if (300..<400).contains(response.status), let location = response.header("Location") {
                        target = Self.resolve(location, against: target)
                        if Self.hostOf(target) != Self.hostOf(url) {
                            sendHeaders = headers.filter { $0.name.lowercased() != "authorization" }
                        }
                        continue
                    }
                    throw Self.statusError(response.status, what: what, body: response.body)
                }
                if error.code == .cancelled { throw WeightsError(.unreachable, "\(what): the transfer was cancelled after \(bytes) bytes") }
                throw WeightsError(.unreachable, "\(what): the transfer from \(Self.hostOf(target)) failed after \(bytes) bytes: \(error.message)")
            }
        }
        throw WeightsError(.invalid, "\(what): too many redirects from \(Self.hostOf(url))")
    }

    /// The error of a non-2xx answer.
    static func statusError(_ status: Int, what: String, body: Data) -> WeightsError {
        let detail = String(decoding: body.prefix(300), as: UTF8.self).filter { !$0.isNewline }
        switch status {
        case 401, 403: return WeightsError(.unauthorized, "\(what): refused (HTTP \(status)) \(detail)")
        case 404: return WeightsError(.notFound, "\(what): not found (HTTP 404) \(detail)")
        case 500...599: return WeightsError(.unreachable, "\(what): HTTP \(status) \(detail)")
        default: return WeightsError(.invalid, "\(what): unexpected HTTP \(status) \(detail)")
        }
    }

    /// `scheme://host[:port]` of a URL.
    static func hostOf(_ url: String) -> String {
        let parts = url.split(separator: "/", maxSplits: 3, omittingEmptySubsequences: false)
        guard parts.count >= 3, parts[0].hasSuffix(":"), parts[1].isEmpty else { return url }
        return "\(parts[0])//\(parts[2])"
    }

    /// `location` made absolute against `base`.
    static func resolve(_ location: String, against base: String) -> String {
        if location.contains("://") { return location }
        if location.hasPrefix("/") { return hostOf(base) + location }
        return hostOf(base) + "/" + location
    }

    /// `path` inside `directory`, its parent directories made.
    static func place(_ name: String, in directory: String) throws(WeightsError) -> String {
        let path = directory + "/" + name
        if let slash = path.lastIndex(of: "/") { try WeightsFiles.makeDirectories(String(path[..<slash])) }
        return path
    }
}

extension WeightsCache {
    /// Tells the reconciler that a fetch progressed.
    func signal() { hookValue() }
}

#if canImport(Glibc)
import Glibc
#endif
