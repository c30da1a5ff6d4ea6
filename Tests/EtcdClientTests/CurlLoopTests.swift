import CurlHTTP
import Foundation
import GPUPlaneTestSupport
import Testing

/// The HTTP client's loop with many long transfers at once, against etcd's gateway: more
/// streams than one epoll wait hands back (256), all made ready by one write, each delivered
/// and cancelled, and exchanges served beside them.
@Suite struct CurlLoopTests {
    /// What each stream has received, and how it ended.
    final class Streams: @unchecked Sendable {
        private let lock = NSLock()
        private var received: [String]
        private var endings: [CurlHTTPError.Code?]

        init(_ count: Int) {
            received = Array(repeating: "", count: count)
            endings = Array(repeating: nil, count: count)
        }

        func append(_ index: Int, _ bytes: UnsafeRawBufferPointer) {
            let text = String(decoding: bytes, as: UTF8.self)
            lock.withLock { received[index] += text }
        }
        func end(_ index: Int, _ code: CurlHTTPError.Code) { lock.withLock { endings[index] = code } }
        func count(containing needle: String) -> Int { lock.withLock { received.filter { $0.contains(needle) }.count } }
        var endedCodes: [CurlHTTPError.Code?] { lock.withLock { endings } }
    }

    @Test func manyStreamsMadeReadyAtOnceAreEachDelivered() async throws {
        let etcd = try await SharedEtcd.fixture.value
        let base = try #require(etcd.endpoints.first)
        let count = 300
        let http = CurlHTTP.Client(name: "test-many-streams", maxConnections: count + 8)
        defer { http.shutdown() }
        let key = Data(uniquePrefix("curl-loop").appending("k").utf8).base64EncodedString()
        let watch = Data(#"{"create_request":{"key":"\#(key)"}}"#.utf8)
        let streams = Streams(count)
        var cancels: [@Sendable () -> Void] = []
        for index in 0..<count {
            let request = CurlHTTP.Request(method: .post, url: base + "/v3/watch", body: watch, timeout: nil)
            cancels.append(
                http.stream(
                    request, onData: { streams.append(index, $0) },
                    completion: { result in
                        switch result {
                        case .success: streams.end(index, .transfer)
                        case .failure(let error): streams.end(index, error.code)
                        }
                    }))
        }
        try await eventually("\(count) watches created", timeout: 60) { streams.count(containing: #""created":true"#) == count }

        // One put makes every stream's socket readable in the same instant.
        let put = Data(#"{"key":"\#(key)","value":"\#(Data("v".utf8).base64EncodedString())"}"#.utf8)
        let answer = try await http.perform(CurlHTTP.Request(method: .post, url: base + "/v3/kv/put", body: put, timeout: .seconds(10)))
        #expect(answer.status == 200)
        try await eventually("the put's event on every stream", timeout: 60) { streams.count(containing: #""events""#) == count }
        #expect(streams.endedCodes.allSatisfy { $0 == nil }, "a stream ended before it was cancelled")

        for cancel in cancels { cancel() }
        try await eventually("every stream cancelled", timeout: 60) { streams.endedCodes.allSatisfy { $0 != nil } }
        #expect(streams.endedCodes.allSatisfy { $0 == .cancelled })

        // The loop serves on, and every transfer was counted once.
        let range = Data(#"{"key":"\#(key)"}"#.utf8)
        let read = try await http.perform(CurlHTTP.Request(method: .post, url: base + "/v3/kv/range", body: range, timeout: .seconds(10)))
        #expect(read.status == 200)
        #expect(http.statistics.transfers == count + 2)
    }
}
