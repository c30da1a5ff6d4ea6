import CurlHTTP
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneSystem

/// Splits a byte stream into newline-delimited lines, whatever the chunking.
struct LineSplitter {
    private var pending: [UInt8] = []
    /// The most buffer kept between lines.
    static let keptCapacity = 64 * 1024
    /// The buffer's capacity now (tests).
    var bufferCapacity: Int { pending.capacity }

    /// Appends a chunk and returns the lines it completed (without their newline; blank lines
    /// are dropped).
    mutating func append(_ bytes: UnsafeRawBufferPointer) -> [Data] {
        var lines: [Data] = []
        var start = bytes.startIndex
        for i in bytes.indices where bytes[i] == UInt8(ascii: "\n") {
            if pending.isEmpty {
                if i > start { lines.append(Data(bytes[start..<i])) }
            } else {
                pending.append(contentsOf: bytes[start..<i])
                lines.append(Data(pending))
                // Kept for the next line, unless a large one grew it: a stream's largest line
                // (megabytes, a watch's batch) would stay allocated for the stream's life.
                pending.removeAll(keepingCapacity: pending.capacity <= Self.keptCapacity)
            }
            start = i + 1
        }
        if start < bytes.endIndex { pending.append(contentsOf: bytes[start..<bytes.endIndex]) }
        return lines.filter { !$0.allSatisfy { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\r") } }
    }

    /// Whatever is left after the stream ended, when it is not blank.
    mutating func flush() -> Data? {
        defer { pending.removeAll() }
        let trimmed = pending.filter { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\r") }
        return trimmed.isEmpty ? nil : Data(pending)
    }
}

/// One line of a gateway stream: `{"result": …}` or `{"error": {…}}`.
struct StreamLine<Result: Decodable>: Decodable {
    var result: Result?
    var error: StreamError?

    struct StreamError: Decodable {
        var grpcCode: Int?
        var httpCode: Int?
        var message: String?
        enum CodingKeys: String, CodingKey { case grpcCode = "grpc_code", httpCode = "http_code", message }
    }
}

/// A long-lived server stream: its lines, and how to abort it.
struct LineStream: Sendable {
    let lines: AsyncThrowingStream<Data, any Error>
    let cancel: @Sendable () -> Void
}

extension Etcd.Client {
    /// Opens a server stream (watch, keepalive, observe) to one member. Lines arrive as
    /// libcurl hands chunks over, split on newlines; the stream ends with an ``EtcdError`` when
    /// the transfer fails, and without one when the member closed it.
    func openLineStream(endpoint: String, path: String, body: Data) -> LineStream {
        let (stream, continuation) = AsyncThrowingStream<Data, any Error>.makeStream()
        let splitter = Locked(LineSplitter())
        let request = makeRequest(endpoint: endpoint, path: path, body: body, stream: true)
        let cancel = http.stream(
            request,
            onData: { bytes in
                for line in splitter.withLock({ $0.append(bytes) }) { continuation.yield(line) }
            },
            completion: { result in
                switch result {
                case .success:
                    if let rest = splitter.withLock({ $0.flush() }) { continuation.yield(rest) }
                    continuation.finish()
                case .failure(let failure):
                    if failure.code == .httpStatus, let response = failure.response {
                        var error = Self.gatewayError(response)
                        error.endpoint = endpoint
                        continuation.finish(throwing: error)
                    } else if failure.code == .cancelled {
                        continuation.finish(throwing: EtcdError.cancelled)
                    } else if failure.code == .timeout {
                        continuation.finish(throwing: EtcdError.timeout(failure.message, endpoint: endpoint))
                    } else {
                        continuation.finish(throwing: EtcdError.unavailable(failure.message, endpoint: endpoint))
                    }
                }
            })
        continuation.onTermination = { _ in cancel() }
        return LineStream(lines: stream, cancel: cancel)
    }

    /// What a check of a quiet stream found (``consume(_:endpoint:quietCheck:handle:)``).
    enum QuietStream: Sendable {
        /// The member answered and the stream owes nothing.
        case upToDate
        /// The member answered, and its keys show a change at `revision` the stream has not
        /// delivered.
        case behind(revision: Int64)
        /// The member did not answer.
        case unreachable
    }

    /// Reads `stream` until it ends, calling `handle` for each line, while checking it whenever
    /// it stays quiet for `streamIdleTimeout`: with `quietCheck` when given (a watch asks
    /// whether its keys changed after what it delivered), else by probing the member with
    /// `POST /v3/maintenance/status`. A member that does not answer gets its stream aborted;
    /// so does a stream that owes a change and still delivers nothing a moment later (a
    /// connection that stays open but no longer carries the member's messages: a probe of the
    /// member alone would keep it forever).
    /// Returns how the stream ended: nil when the member closed it, else the error.
    func consume(
        _ stream: LineStream, endpoint: String, quietCheck: (@Sendable () async -> QuietStream)? = nil,
        handle: (Data) async throws -> Bool
    ) async -> (any Error)? {
        let lastData = Locked(ContinuousClock.now)
        let idle = configuration.streamIdleTimeout
        let prober = Task { [self] in
            while !Task.isCancelled {
                let quietFor = ContinuousClock.now - lastData.withLock { $0 }
                if quietFor < idle {
                    try? await Task.sleep(for: idle - quietFor)
                    continue
                }
                let checked = ContinuousClock.now
                let found = if let quietCheck { await quietCheck() } else { await probeMember(endpoint) }
                switch found {
                case .upToDate:
                    lastData.withLock { $0 = max($0, checked) }
                    continue
                case .behind(let revision):
                    // The change may be on its way this very moment: give it a little time.
                    try? await Task.sleep(for: min(idle, .seconds(1)))
                    if Task.isCancelled { return }
                    if lastData.withLock({ $0 > checked }) { continue }
                    logger.notice(
                        "etcd stream owes a change and delivers nothing; reconnecting",
                        metadata: ["endpoint": "\(endpoint)", "revision": "\(revision)"])
                case .unreachable:
                    if Task.isCancelled { return }
                    logger.info("etcd stream member failed its probe; reconnecting", metadata: ["endpoint": "\(endpoint)"])
                }
                stream.cancel()
                return
            }
        }
        defer { prober.cancel() }
        do {
            for try await line in stream.lines {
                lastData.withLock { $0 = .now }
                if try await !handle(line) {
                    stream.cancel()
                    return nil
                }
            }
            return nil
        } catch {
            return error
        }
    }

    /// Whether `endpoint` answers `POST /v3/maintenance/status`.
    private func probeMember(_ endpoint: String) async -> QuietStream {
        let probe = makeRequest(endpoint: endpoint, path: "/v3/maintenance/status", body: Data("{}".utf8), stream: false)
        if case .completed(let r) = await perform(probe), r.status == 200 { return .upToDate }
        return .unreachable
    }

    /// Whether `range`, read at `endpoint`, holds a key written after `delivered`: its most
    /// recently written key alone, without values (etcd sorts by mod revision).
    func keysChanged(_ range: Etcd.KeyRange, after delivered: Int64, at endpoint: String) async -> QuietStream {
        let latest = Etcd.RangeRequest(range, limit: 1, keysOnly: true, sortOrder: .descend, sortTarget: .mod)
        guard let body = try? encode(latest) else { return await probeMember(endpoint) }
        let read = makeRequest(endpoint: endpoint, path: "/v3/kv/range", body: body, stream: false)
        guard case .completed(let r) = await perform(read), r.status == 200,
            let answer = try? decode(Etcd.RangeResponse.self, from: r.body)
        else { return .unreachable }
        if let kv = answer.kvs.first, kv.modRevision > delivered { return .behind(revision: kv.modRevision) }
        return .upToDate
    }
}
