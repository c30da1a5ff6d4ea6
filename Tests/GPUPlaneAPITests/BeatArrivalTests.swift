import Foundation
import GPUPlaneTestSupport
#if canImport(Glibc)
import Glibc
#endif
import HTTPTypes
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOPosix
import Synchronization
import Testing

@testable import GPUPlaneAPI

/// ``BeatArrivalHandler`` on a real loopback connection, in the api-server's HTTP pipeline: a
/// heartbeat (or a request with a deadline) read late is stamped with when its bytes reached
/// the host, and a stamp a client sends itself never gets through.
@Suite struct BeatArrivalTests {
    /// The heads the handler passed on, with when each was read.
    final class Recorder: ChannelInboundHandler, Sendable {
        typealias InboundIn = HTTPRequestPart
        let heads = Mutex<[(head: HTTPRequest, read: ContinuousClock.Instant)]>([])

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            if case .head(let head) = unwrapInboundIn(data) {
                let read = ContinuousClock.now
                heads.withLock { $0.append((head, read)) }
            }
        }
    }

    /// A server of one event loop: HTTP/1 decoding, the handler, the recorder.
    static func withServer(_ body: (MultiThreadedEventLoopGroup, Int, Recorder) async throws -> Void) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let recorder = Recorder()
        let server = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                    try channel.pipeline.syncOperations.addHandler(BeatArrivalHandler())
                    try channel.pipeline.syncOperations.addHandler(recorder)
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        do {
            try await body(group, server.localAddress?.port ?? 0, recorder)
        } catch {
            try? await server.close()
            try? await group.shutdownGracefully()
            throw error
        }
        try await server.close()
        try await group.shutdownGracefully()
    }

    /// Sends `request` on a new blocking loopback connection to `port`; the socket, left open.
    static func send(_ request: String, port: Int) throws -> Int32 {
        guard let fd = TestSockets.connectLoopback(port: port) else {
            throw HarnessError(description: "cannot connect to 127.0.0.1:\(port): errno \(errno)")
        }
        let bytes = Array(request.utf8)
        #expect(Glibc.send(fd, bytes, bytes.count, Int32(MSG_NOSIGNAL)) == bytes.count)
        return fd
    }

    static func heartbeat(extra: String = "") -> String {
        "POST /v1/nodes/n-1/heartbeat HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\(extra)\r\n"
    }

    /// A status report that says how long its client waits (``RequestDeadline``).
    static let reportWithDeadline =
        "PUT /v1/replicas/t/a.p/status HTTP/1.1\r\nHost: x\r\nGpuplane-Timeout-Ms: 10000\r\nContent-Length: 2\r\n\r\n{}"

    /// The server's only event loop is busy for a second (as under a burst of connections):
    /// the beat (or a request with a deadline) sent meanwhile waits in the accept queue and the
    /// socket, and is stamped with when it was sent, not when it was read.
    @Test(arguments: [heartbeat(), reportWithDeadline])
    func aBeatReadLateIsStampedWithWhenItArrived(_ request: String) async throws {
        try await Self.withServer { group, port, recorder in
            let busy = DispatchSemaphore(value: 0)
            group.next().execute {
                busy.signal()
                Thread.sleep(forTimeInterval: 1)
            }
            busy.wait()
            let sending = ContinuousClock.now
            let fd = try Self.send(request, port: port)
            defer { close(fd) }
            let sent = ContinuousClock.now
            try await eventually("the beat read", timeout: 30) { recorder.heads.withLock { !$0.isEmpty } }
            let (head, read) = try #require(recorder.heads.withLock { $0.first })
            let text = try #require(head.headerFields[BeatArrival.field], "no stamp on \(head.method) \(head.path ?? "")")
            let arrived = try #require(Int64(text).map { BeatArrival.origin + .nanoseconds($0) })
            // The kernel counts in milliseconds from its clock ticks: a few ms either way.
            #expect(arrived >= sending - .milliseconds(50), "stamped before it was sent")
            #expect(arrived <= sent + .milliseconds(50), "stamped after it was sent")
            #expect(read - arrived >= .milliseconds(500), "read \(read - arrived) after arriving: the loop was busy a second")
        }
    }

    /// A stamp sent by a client is dropped from any request, and replaced on a heartbeat.
    @Test func aClientsOwnStampNeverGetsThrough() async throws {
        try await Self.withServer { _, port, recorder in
            let forged = "\(BeatArrival.field.rawName): 0\r\n"
            let beat = try Self.send(Self.heartbeat(extra: forged), port: port)
            defer { close(beat) }
            let other = try Self.send("GET /v1/nodes HTTP/1.1\r\nHost: x\r\n\(forged)\r\n", port: port)
            defer { close(other) }
            try await eventually("both requests read", timeout: 30) { recorder.heads.withLock { $0.count == 2 } }
            let heads = recorder.heads.withLock { $0.map(\.head) }
            let beatHead = try #require(heads.first { $0.method == .post })
            let otherHead = try #require(heads.first { $0.method == .get })
            #expect(beatHead.headerFields[values: BeatArrival.field].count == 1)
            #expect(beatHead.headerFields[BeatArrival.field] != "0", "the client's stamp got through")
            #expect(otherHead.headerFields[BeatArrival.field] == nil)
        }
    }
}
