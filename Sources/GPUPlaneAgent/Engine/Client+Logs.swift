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
        try await readLogs(container, tail: tail).map(\.line)
    }

    /// The container's output as it writes it, after its last `tail` lines (0: only new
    /// ones; nil: all). The sequence ends when the container stops (or is removed), and throws
    /// ``EngineError`` (``EngineError/Code/notFound`` for no such container). Ending the
    /// iteration aborts the request. Maps to `GET /v1.41/containers/{id}/logs?follow=true&…`.
    ///
    /// Podman's follow can end before it has read the last lines of a container that exits
    /// (k8s-file logs; podman issues 10596 and 21914), or while the container still runs. So
    /// lines come with their engine timestamps (one-second precision) and, when a follow ends,
    /// the rest is read again from the last line's second, the lines already delivered skipped
    /// (``LogCursor``): once more without following when the container has stopped, else
    /// following again.
    public func followLogs(_ container: String, tail: Int? = 0) -> AsyncThrowingStream<ContainerEngine.LogLine, any Error> {
        let (lines, continuation) = AsyncThrowingStream<ContainerEngine.LogLine, any Error>.makeStream()
        let task = Task { [self] in
            let began = Int64(Date().timeIntervalSince1970)
            var cursor = LogCursor()
            var query = logsQuery(tail: tail, follow: true, stamped: true)
            var pause = Duration.milliseconds(100)
            do {
                while !Task.isCancelled {
                    var delivered = false
                    for try await entry in stampedFollow(container, query: query) {
                        for line in cursor.admit(entry.line, second: entry.second) {
                            continuation.yield(line)
                            delivered = true
                        }
                    }
                    if Task.isCancelled { break }
                    for line in cursor.endOfRead() { continuation.yield(line) }
                    // Resume at the last delivered line's second; with none, where this began.
                    let since = cursor.resume() ?? (tail == 0 ? began : nil)
                    let running: Bool
                    do { running = try await inspect(container).state.isRunning } catch let error as EngineError where error.code == .notFound { break }
                    if !running {
                        let rest = try await readLogs(container, tail: since == nil ? tail : nil, stamped: true, since: since)
                        for entry in rest {
                            for line in cursor.admit(entry.line, second: entry.second) { continuation.yield(line) }
                        }
                        for line in cursor.endOfRead() { continuation.yield(line) }
                        break
                    }
                    // A follow that ended while the container runs: follow again, pausing longer
                    // each time one brought nothing.
                    if delivered { pause = .milliseconds(100) } else { pause = min(pause * 2, .seconds(2)) }
                    do { try await Task.sleep(for: pause) } catch { break }
                    query = logsQuery(tail: since == nil ? tail : nil, follow: true, stamped: true, since: since)
                }
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return lines
    }

    /// One follow request, its lines with their seconds; ends when the engine ends it.
    private func stampedFollow(_ container: String, query: [(String, String)]) -> AsyncThrowingStream<LogDemuxer.Entry, any Error> {
        let (entries, continuation) = AsyncThrowingStream<LogDemuxer.Entry, any Error>.makeStream()
        let demuxer = Locked(LogDemuxer(stamped: true))
        let cancel = http.stream(
            streamRequest(logsPath(container), query: query),
            onData: { bytes in
                for entry in demuxer.withLock({ $0.entries(bytes) }) { continuation.yield(entry) }
            },
            completion: { result in
                for entry in demuxer.withLock({ $0.finishEntries() }) { continuation.yield(entry) }
                continuation.finish(throwing: Self.streamEnd(result, subject: container))
            })
        continuation.onTermination = { _ in cancel() }
        return entries
    }

    /// One read of the logs, without following, its lines (`stamped`: with their seconds).
    private func readLogs(
        _ container: String, tail: Int?, stamped: Bool = false, since: Int64? = nil
    ) async throws(EngineError) -> [LogDemuxer.Entry] {
        let query = logsQuery(tail: tail, follow: false, stamped: stamped, since: since)
        let response = try await send(.get, logsPath(container), query: query, retry: .idempotent)
        switch response.status {
        case 200:
            var demuxer = LogDemuxer(stamped: stamped)
            return response.body.withUnsafeBytes { demuxer.entries($0) } + demuxer.finishEntries()
        case 404: throw notFound(container, response)
        default: throw Self.refused(response, subject: container)
        }
    }

    private func logsPath(_ container: String) -> String {
        ContainerEngine.compatPrefix + "/containers/" + Self.segment(container) + "/logs"
    }

    private func logsQuery(tail: Int?, follow: Bool, stamped: Bool = false, since: Int64? = nil) -> [(String, String)] {
        var query = [("stdout", "true"), ("stderr", "true"), ("follow", follow ? "true" : "false"),
                     ("tail", tail.map { String(max(0, $0)) } ?? "all")]
        if stamped { query.append(("timestamps", "true")) }
        if let since { query.append(("since", String(since))) }
        return query
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
/// with one the stream is raw, which the first bytes tell. `stamped`: the logs were asked with
/// `timestamps=true`, so each frame (each line of a raw stream) begins with its RFC 3339 time
/// and a space, which is taken off and kept as the line's second.
struct LogDemuxer {
    /// A line and the second the engine stamped it with (nil when not stamped).
    struct Entry: Sendable {
        var line: ContainerEngine.LogLine
        var second: Int64?
    }

    private let stamped: Bool
    private var pending: [UInt8] = []
    private var multiplexed: Bool?
    private var partial: [ContainerEngine.LogLine.Stream: (bytes: [UInt8], second: Int64?)] = [:]

    init(stamped: Bool = false) { self.stamped = stamped }

    /// Appends bytes and returns the lines they completed, with their seconds.
    mutating func entries(_ bytes: UnsafeRawBufferPointer) -> [Entry] {
        pending.append(contentsOf: bytes)
        if multiplexed == nil {
            guard pending.count >= 4 else { return [] }
            multiplexed = pending[0] <= 2 && pending[1] == 0 && pending[2] == 0 && pending[3] == 0
        }
        var lines: [Entry] = []
        if multiplexed == false {
            splitRaw(into: &lines)
            return lines
        }
        var offset = 0
        while pending.count - offset >= 8 {
            let size =
                Int(pending[offset + 4]) << 24 | Int(pending[offset + 5]) << 16 | Int(pending[offset + 6]) << 8
                | Int(pending[offset + 7])
            guard pending.count - offset - 8 >= size else { break }
            let stream: ContainerEngine.LogLine.Stream = pending[offset] == 2 ? .stderr : .stdout
            var payload = pending[(offset + 8)..<(offset + 8 + size)]
            let second = stamped ? Self.takeStamp(&payload) : nil
            split(payload, stream: stream, second: second, into: &lines)
            offset += 8 + size
        }
        pending.removeFirst(offset)
        return lines
    }

    /// The unterminated last lines, once the stream ended, with their seconds.
    mutating func finishEntries() -> [Entry] {
        var lines: [Entry] = []
        if multiplexed != true, !pending.isEmpty {
            pending.append(UInt8(ascii: "\n"))
            splitRaw(into: &lines)
        }
        pending.removeAll()
        for stream in [ContainerEngine.LogLine.Stream.stdout, .stderr] {
            if let rest = partial.removeValue(forKey: stream), !rest.bytes.isEmpty {
                lines.append(Entry(line: .init(stream: stream, text: Self.text(rest.bytes[...])), second: rest.second))
            }
        }
        return lines
    }

    /// A raw stream's complete lines (stamped one by one), the unterminated rest kept pending.
    private mutating func splitRaw(into lines: inout [Entry]) {
        var start = pending.startIndex
        for i in pending.indices where pending[i] == UInt8(ascii: "\n") {
            var line = pending[start...i]
            let second = stamped ? Self.takeStamp(&line) : nil
            split(line, stream: .stdout, second: second, into: &lines)
            start = i + 1
        }
        pending.removeFirst(start)
    }

    private mutating func split(
        _ bytes: ArraySlice<UInt8>, stream: ContainerEngine.LogLine.Stream, second: Int64?, into lines: inout [Entry]
    ) {
        var start = bytes.startIndex
        for i in bytes.indices where bytes[i] == UInt8(ascii: "\n") {
            // A line continued from an earlier partial frame keeps that frame's second.
            let (earlier, earlierSecond) = partial.removeValue(forKey: stream) ?? ([], second)
            var line = earlier
            line.append(contentsOf: bytes[start..<i])
            lines.append(Entry(line: .init(stream: stream, text: Self.text(line[...])), second: earlierSecond))
            start = i + 1
        }
        if start < bytes.endIndex {
            var rest = partial[stream] ?? ([], second)
            rest.bytes.append(contentsOf: bytes[start...])
            partial[stream] = rest
        }
    }

    /// Takes `<RFC 3339 time> ` off the front of `bytes` and returns its second (nil, and
    /// nothing taken, when the bytes do not begin with one).
    private static func takeStamp(_ bytes: inout ArraySlice<UInt8>) -> Int64? {
        guard let space = bytes.prefix(40).firstIndex(of: UInt8(ascii: " ")),
            let date = RFC3339.parse(String(decoding: bytes[bytes.startIndex..<space], as: UTF8.self))
        else { return nil }
        bytes = bytes[(space + 1)...]
        return Int64(date.timeIntervalSince1970.rounded(.down))
    }

    private static func text(_ bytes: ArraySlice<UInt8>) -> String {
        var slice = bytes
        if slice.last == UInt8(ascii: "\r") { slice = slice.dropLast() }
        return String(decoding: slice, as: UTF8.self)
    }
}

/// Where a log follow is, for reading the rest again after it ended: the second of the last
/// line delivered and the last lines delivered in that second. A read resumed at that second
/// (``resume()``, then the engine's `since`) lists that second's lines again from its start;
/// they are held back until the lines delivered last have gone by, so that neither lines before
/// them (a follow that began mid-second, with a tail) nor they themselves come twice. Lines of an
/// earlier second are dropped. Should the delivered lines never show up (a log rotated away),
/// the held lines are delivered when a later second or the read's end comes: twice rather than
/// never.
struct LogCursor {
    /// How many of the last lines of a second are kept to recognise.
    static let kept = 64

    private(set) var second: Int64?
    private var recent: [ContainerEngine.LogLine] = []
    /// While a resumed read has not yet passed `recent`: its lines of `second` so far.
    private var held: [ContainerEngine.LogLine]?

    /// The lines to deliver now for `line`, stamped `second` (nil: not stamped, delivered).
    mutating func admit(_ line: ContainerEngine.LogLine, second: Int64?) -> [ContainerEngine.LogLine] {
        guard let second else { return [line] }
        var out: [ContainerEngine.LogLine] = []
        if let last = self.second, var lines = held {
            if second < last { return [] }
            if second == last {
                lines.append(line)
                if lines.count >= recent.count, Array(lines.suffix(recent.count)) == recent {
                    held = nil  // passed what was delivered: what follows is new
                } else {
                    held = lines
                }
                return []
            }
            out = lines  // a later second, and the delivered lines never came by
            held = nil
        }
        if let last = self.second, second == last {
            recent.append(line)
            if recent.count > Self.kept { recent.removeFirst(recent.count - Self.kept) }
        } else if self.second.map({ second > $0 }) ?? true {
            self.second = second
            recent = [line]
        }
        return out + [line]
    }

    /// The second to read again from (nil: nothing delivered yet); the next read's lines of
    /// that second are held until the ones delivered last go by.
    mutating func resume() -> Int64? {
        guard second != nil else { return nil }
        held = []
        return second
    }

    /// Lines a resumed read held and never matched, once it ended.
    mutating func endOfRead() -> [ContainerEngine.LogLine] {
        defer { held = nil }
        return held ?? []
    }
}
