import CurlHTTP
import Foundation
import GPUPlaneSystem

/// Splits a byte stream into newline-delimited lines, whatever the chunking.
struct LineSplitter {
    private var pending: [UInt8] = []

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
                pending.removeAll(keepingCapacity: true)
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

    /// Reads `stream` until it ends, calling `handle` for each line, while probing the member
    /// with `POST /v3/maintenance/status` whenever the stream stays quiet for
    /// `streamIdleTimeout`; a member that fails the probe gets its stream aborted.
    /// Returns how the stream ended: nil when the member closed it, else the error.
    func consume(
        _ stream: LineStream, endpoint: String, handle: (Data) async throws -> Bool
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
                let probe = makeRequest(endpoint: endpoint, path: "/v3/maintenance/status", body: Data("{}".utf8), stream: false)
                if case .completed(let r) = await perform(probe), r.status == 200 {
                    lastData.withLock { $0 = .now }
                    continue
                }
                if Task.isCancelled { return }
                logger.info("etcd stream member failed its probe; reconnecting", metadata: ["endpoint": "\(endpoint)"])
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
}
