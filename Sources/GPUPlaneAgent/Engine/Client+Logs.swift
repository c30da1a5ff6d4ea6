import CurlHTTP
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneSystem

extension ContainerEngine.Client {
    /// The last `tail` lines the container wrote (all of them when nil), stdout and stderr
    /// interleaved as written. Maps to
    /// `GET /v1.41/containers/{id}/logs?stdout=true&stderr=true&tail=…`.
    /// - Throws: ``EngineError/Code/notFound`` when there is no such container.
    public func logs(_ container: String, tail: Int? = 100) async throws(EngineError) -> [ContainerEngine.LogLine] {
        let response = try await send(.get, logsPath(container), query: logsQuery(tail: tail, follow: false), retry: .idempotent)
        switch response.status {
        case 200:
            var demuxer = LogDemuxer()
            return response.body.withUnsafeBytes { demuxer.append($0) } + demuxer.finish()
        case 404: throw notFound(container, response)
        default: throw Self.refused(response, subject: container)
        }
    }

    /// The container's output as it writes it, after its last `tail` lines (0: only new
    /// ones; nil: all). The sequence ends when the container stops, and throws
    /// ``EngineError`` (``EngineError/Code/notFound`` for no such container). Ending the
    /// iteration aborts the request. Maps to `GET /v1.41/containers/{id}/logs?follow=true&…`.
    public func followLogs(_ container: String, tail: Int? = 0) -> AsyncThrowingStream<ContainerEngine.LogLine, any Error> {
        let (lines, continuation) = AsyncThrowingStream<ContainerEngine.LogLine, any Error>.makeStream()
        let demuxer = Locked(LogDemuxer())
        let cancel = http.stream(
            streamRequest(logsPath(container), query: logsQuery(tail: tail, follow: true)),
            onData: { bytes in
                for line in demuxer.withLock({ $0.append(bytes) }) { continuation.yield(line) }
            },
            completion: { result in
                for line in demuxer.withLock({ $0.finish() }) { continuation.yield(line) }
                continuation.finish(throwing: Self.streamEnd(result, subject: container))
            })
        continuation.onTermination = { _ in cancel() }
        return lines
    }

    private func logsPath(_ container: String) -> String {
        ContainerEngine.compatPrefix + "/containers/" + Self.segment(container) + "/logs"
    }

    private func logsQuery(tail: Int?, follow: Bool) -> [(String, String)] {
        [("stdout", "true"), ("stderr", "true"), ("follow", follow ? "true" : "false"),
         ("tail", tail.map { String(max(0, $0)) } ?? "all")]
    }

    /// A request for a stream that lasts: no overall deadline.
    func streamRequest(_ path: String, query: [(String, String)]) -> CurlHTTP.Request {
        CurlHTTP.Request(
            method: .get, url: "http://localhost" + path + Self.queryString(query), timeout: nil,
            connectTimeout: configuration.connectTimeout, unixSocketPath: configuration.socketPath)
    }

    /// How a stream ended, as the error to finish it with (nil: the engine ended it).
    static func streamEnd(_ result: Result<CurlHTTP.Response, CurlHTTPError>, subject: String) -> EngineError? {
        switch result {
        case .success:
            return nil
        case .failure(let error) where error.code == .httpStatus:
            guard let response = error.response else { return transportError(error, path: subject) }
            if response.status == 404 {
                return EngineError(
                    code: .notFound, message: engineMessage(response), httpStatus: 404, body: bodyText(response),
                    subject: subject)
            }
            return refused(response, subject: subject)
        case .failure(let error):
            return transportError(error, path: subject)
        }
    }
}

/// Splits the engines' log stream into lines. Without a TTY both engines multiplex stdout and
/// stderr in frames of an 8-byte header (stream, 0, 0, 0, big-endian length) and a payload;
/// with one the stream is raw, which the first bytes tell.
struct LogDemuxer {
    private var pending: [UInt8] = []
    private var multiplexed: Bool?
    private var partial: [ContainerEngine.LogLine.Stream: [UInt8]] = [:]

    /// Appends bytes and returns the lines they completed.
    mutating func append(_ bytes: UnsafeRawBufferPointer) -> [ContainerEngine.LogLine] {
        pending.append(contentsOf: bytes)
        if multiplexed == nil {
            guard pending.count >= 4 else { return [] }
            multiplexed = pending[0] <= 2 && pending[1] == 0 && pending[2] == 0 && pending[3] == 0
        }
        var lines: [ContainerEngine.LogLine] = []
        if multiplexed == false {
            split(pending[...], stream: .stdout, into: &lines)
            pending.removeAll(keepingCapacity: true)
            return lines
        }
        var offset = 0
        while pending.count - offset >= 8 {
            let size =
                Int(pending[offset + 4]) << 24 | Int(pending[offset + 5]) << 16 | Int(pending[offset + 6]) << 8
                | Int(pending[offset + 7])
            guard pending.count - offset - 8 >= size else { break }
            let stream: ContainerEngine.LogLine.Stream = pending[offset] == 2 ? .stderr : .stdout
            split(pending[(offset + 8)..<(offset + 8 + size)], stream: stream, into: &lines)
            offset += 8 + size
        }
        pending.removeFirst(offset)
        return lines
    }

    /// The unterminated last lines, once the stream ended.
    mutating func finish() -> [ContainerEngine.LogLine] {
        var lines: [ContainerEngine.LogLine] = []
        if multiplexed != true, !pending.isEmpty { split(pending[...], stream: .stdout, into: &lines) }
        pending.removeAll()
        for stream in [ContainerEngine.LogLine.Stream.stdout, .stderr] {
            if let rest = partial.removeValue(forKey: stream), !rest.isEmpty {
                lines.append(ContainerEngine.LogLine(stream: stream, text: Self.text(rest[...])))
            }
        }
        return lines
    }

    private mutating func split(
        _ bytes: ArraySlice<UInt8>, stream: ContainerEngine.LogLine.Stream, into lines: inout [ContainerEngine.LogLine]
    ) {
        var start = bytes.startIndex
        for i in bytes.indices where bytes[i] == UInt8(ascii: "\n") {
            var line = partial.removeValue(forKey: stream) ?? []
            line.append(contentsOf: bytes[start..<i])
            lines.append(ContainerEngine.LogLine(stream: stream, text: Self.text(line[...])))
            start = i + 1
        }
        if start < bytes.endIndex { partial[stream, default: []].append(contentsOf: bytes[start...]) }
    }

    private static func text(_ bytes: ArraySlice<UInt8>) -> String {
        var slice = bytes
        if slice.last == UInt8(ascii: "\r") { slice = slice.dropLast() }
        return String(decoding: slice, as: UTF8.self)
    }
}
