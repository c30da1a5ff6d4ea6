import HTTPTypes
import NIOCore
import NIOEmbedded
import NIOHTTPTypes
import NIOPosix
import Testing

@testable import GPUPlaneAPI

/// ``ConnectionGuardHandler``'s deadlines on NIO's embedded event loop, whose clock moves only
/// when the test moves it: a connection is closed exactly when its head, body or keep-alive
/// limit passes, and never by a check scheduled for an earlier limit it has since moved past.
@Suite struct ConnectionGuardTests {
    let limits = ConnectionLimits(headerTimeout: .seconds(10), bodyTimeout: .seconds(30), keepAliveTimeout: .seconds(60))

    /// A connected channel with the guard, at the loop's time zero.
    func connection() throws -> (EmbeddedChannel, EmbeddedEventLoop) {
        let loop = EmbeddedEventLoop()
        let channel = EmbeddedChannel(handler: ConnectionGuardHandler(limits: limits, counter: SourceConnectionCounter(limit: 0)), loop: loop)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 4000)).wait()
        return (channel, loop)
    }

    func request(_ channel: EmbeddedChannel, end: Bool = true) throws {
        try channel.writeInbound(HTTPRequestPart.head(HTTPRequest(method: .post, scheme: "http", authority: "x", path: "/v1/nodes/n/heartbeat")))
        if end { try channel.writeInbound(HTTPRequestPart.end(nil)) }
    }

    func respond(_ channel: EmbeddedChannel) throws {
        try channel.writeOutbound(HTTPResponsePart.head(HTTPResponse(status: .ok)))
        try channel.writeOutbound(HTTPResponsePart.end(nil))
    }

    @Test func aConnectionBeatingEverySecondStaysOpenAndClosesAfterItsKeepAlive() throws {
        let (channel, loop) = try connection()
        for beat in 1...200 {
            loop.advanceTime(by: .seconds(1))
            #expect(channel.isActive, "closed at beat \(beat)")
            try request(channel)
            try respond(channel)
        }
        loop.advanceTime(by: .seconds(59))
        #expect(channel.isActive, "closed before its keep-alive limit")
        loop.advanceTime(by: .seconds(2))
        #expect(!channel.isActive, "an idle connection outlived its keep-alive limit")
    }

    @Test func aSilentConnectionIsClosedAtTheHeaderLimit() throws {
        let (channel, loop) = try connection()
        loop.advanceTime(by: .seconds(9))
        #expect(channel.isActive)
        loop.advanceTime(by: .seconds(2))
        #expect(!channel.isActive)
    }

    @Test func aBodyThatStopsIsClosedAtTheBodyLimitEvenAfterKeepAlives() throws {
        let (channel, loop) = try connection()
        // Two answered requests leave a check scheduled for the first keep-alive limit.
        try request(channel)
        try respond(channel)
        loop.advanceTime(by: .seconds(5))
        try request(channel)
        try respond(channel)
        loop.advanceTime(by: .seconds(5))
        try request(channel, end: false)
        loop.advanceTime(by: .seconds(29))
        #expect(channel.isActive)
        loop.advanceTime(by: .seconds(2))
        #expect(!channel.isActive, "a stalled body outlived its limit")
    }

    @Test func aResponseBeingWrittenHasNoLimit() throws {
        let (channel, loop) = try connection()
        try request(channel)
        loop.advanceTime(by: .seconds(3600))
        #expect(channel.isActive, "closed while its answer was owed")
        try respond(channel)
        loop.advanceTime(by: .seconds(59))
        #expect(channel.isActive)
        loop.advanceTime(by: .seconds(2))
        #expect(!channel.isActive)
    }

    /// NIO keeps a connection's receive buffer for the connection's life at the size its
    /// allocator first asks for: the connection guard sets every connection's to 512 bytes, not
    /// NIO's 2 KB, which every idle connection paid. (The guard closes a connection that sends no
    /// request within its header timeout, 10 s by default, which a loaded test run outwaited:
    /// here it is an hour, and the option is read on the connection's event loop as the guard
    /// is added.)
    @Test func aConnectionReadsIntoASmallBufferFirst() async throws {
        let accepted = MultiThreadedEventLoopGroup.singleton.next().makePromise(of: (any RecvByteBufferAllocator).self)
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ConnectionGuardHandler(limits: ConnectionLimits(headerTimeout: .seconds(3_600)), counter: SourceConnectionCounter(limit: 0)))
                    let options = try #require(channel.syncOptions)
                    accepted.succeed(try options.getOption(ChannelOptions.recvAllocator))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(server.localAddress?.port)
        let client = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port).get()
        let allocator = try await accepted.futureResult.get()
        let adaptive = try #require(allocator as? AdaptiveRecvByteBufferAllocator)
        #expect(adaptive.initial == 512)
        #expect(adaptive.nextBufferSize() == 512)
        #expect(adaptive.maximum == 65536)
        try await client.close()
        try await server.close()
    }
}
