import CurlHTTP
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneSystem

extension ContainerEngine.Client {
    /// Container events as they happen (`create`, `start`, `die`, `oom`, `stop`, `remove`…)
    /// of the containers carrying every one of `labels`. The sequence lasts until iteration
    /// ends or the engine closes it, and throws ``EngineError``. Maps to
    /// `GET /v1.41/events?filters={"type":["container"],"label":[…]}`.
    public func events(
        labels: [String: String] = [ContainerEngine.managedLabel.key: ContainerEngine.managedLabel.value]
    ) throws(EngineError) -> AsyncThrowingStream<ContainerEngine.ContainerEvent, any Error> {
        let filters = try Self.labelFilters(labels, extra: ["type": ["container"]])
        let (events, continuation) = AsyncThrowingStream<ContainerEngine.ContainerEvent, any Error>.makeStream()
        let splitter = Locked(JSONLineSplitter())
        let decode: @Sendable (Data) -> Void = { line in
            guard let wire = try? JSONDecoder().decode(WireEvent.self, from: line), let event = ContainerEngine.ContainerEvent(wire)
            else { return }
            continuation.yield(event)
        }
        let cancel = http.stream(
            streamRequest(ContainerEngine.compatPrefix + "/events", query: [("filters", filters)]),
            onData: { bytes in splitter.withLock { $0.append(bytes) }.forEach(decode) },
            completion: { result in
                splitter.withLock { $0.flush() }.map(decode)
                continuation.finish(throwing: Self.streamEnd(result, subject: "/events"))
            })
        continuation.onTermination = { _ in cancel() }
        return events
    }
}

extension ContainerEngine.ContainerEvent {
    init?(_ w: WireEvent) {
        guard w.Type == nil || w.Type == "container", let action = w.Action ?? w.status,
            let id = w.Actor?.ID ?? w.id
        else { return nil }
        let attributes = w.Actor?.Attributes ?? [:]
        let exit = attributes["exitCode"] ?? attributes["containerExitCode"]
        let time: Date? =
            if let nanos = w.timeNano, nanos > 0 {
                Date(timeIntervalSince1970: TimeInterval(nanos) / 1e9)
            } else {
                w.time.map { Date(timeIntervalSince1970: TimeInterval($0)) }
            }
        self.init(
            action: action, id: id, name: attributes["name"], exitCode: exit.flatMap { Int($0) },
            attributes: attributes, time: time)
    }
}

/// Splits a stream of newline-delimited JSON objects, whatever the chunking.
struct JSONLineSplitter {
    private var pending: [UInt8] = []

    /// Appends bytes and returns the complete non-blank lines.
    mutating func append(_ bytes: UnsafeRawBufferPointer) -> [Data] {
        pending.append(contentsOf: bytes)
        var lines: [Data] = []
        var start = 0
        for i in pending.indices where pending[i] == UInt8(ascii: "\n") {
            if i > start { lines.append(Data(pending[start..<i])) }
            start = i + 1
        }
        pending.removeFirst(start)
        return lines.filter { !$0.allSatisfy { $0 == 32 || $0 == 13 || $0 == 9 } }
    }

    /// What is left once the stream ended, when not blank.
    mutating func flush() -> Data? {
        defer { pending.removeAll() }
        return pending.allSatisfy({ $0 == 32 || $0 == 13 || $0 == 9 }) ? nil : Data(pending)
    }
}
