import Foundation
import GPUPlaneCore
import HTTPTypes
import Metrics
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOPosix

/// Protocol upgrades (websockets) on application URLs: a request to `/apps/<tenant>/<app>/…`
/// with an `Upgrade` header is taken out of Hummingbird's hands on the connection itself. Once
/// ``AppIngress`` resolves it to a ready replica, the handler connects to the replica's
/// published port, sends the request head (the client's headers less gpuplane tokens and
/// `X-Forwarded-*`, which are set as for any request), takes the HTTP codec off the
/// connection and splices the two sockets byte for byte, both ways, with back-pressure, until
/// either side closes: the pod's `101 Switching Protocols` (or whatever it answers) and every
/// frame after pass through untouched.
///
/// A request that does not resolve goes on to Hummingbird, whose route answers the error
/// (404, 503, …); one whose connection fails goes on marked, and the route answers 502.
final class IngressUpgradeHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart

    /// The header that tells the route why a splice could not be set up.
    static let failureHeader = "X-GPUPlane-Upgrade-Failed"

    private let ingress: AppIngress
    private enum State {
        case idle
        /// Connecting to the pod; the request's parts are swallowed (an upgrade has no body).
        case connecting(HTTPRequest)
        case spliced
    }
    private var state = State.idle

    init(ingress: AppIngress) { self.ingress = ingress }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch state {
        case .spliced:
            return
        case .connecting:
            return
        case .idle:
            break
        }
        guard case .head(let head) = unwrapInboundIn(data), head.headerFields[.upgrade] != nil,
            let path = head.path, path.hasPrefix(AppIngress.pathPrefix), let target = AppIngress.target(path),
            let destination = try? ingress.upgradeDestination(target)
        else {
            context.fireChannelRead(data)
            return
        }
        state = .connecting(head)
        let remote = context.channel.remoteAddress?.ipAddress
        let request = Self.requestHead(head, target: target, destination: destination, client: remote, proto: ingress.forwardedProto)
        let serverGlue = GlueHandler()
        let boundGlue = NIOLoopBound(serverGlue, eventLoop: context.eventLoop)
        ClientBootstrap(group: context.eventLoop)
            .connectTimeout(.seconds(3))
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let clientGlue = GlueHandler()
                    GlueHandler.pair(clientGlue, boundGlue.value)
                    try channel.pipeline.syncOperations.addHandler(clientGlue)
                }
            }
            .connect(host: destination.host, port: destination.port)
            .assumeIsolated()
            .whenComplete { [self] result in
                switch result {
                case .success(let upstream):
                    upstream.writeAndFlush(ByteBuffer(string: request), promise: nil)
                    splice(context: context, glue: serverGlue)
                case .failure(let error):
                    state = .idle
                    var marked = head
                    if let name = HTTPField.Name(Self.failureHeader) { marked.headerFields[name] = "\(error)" }
                    context.fireChannelRead(wrapInboundOut(.head(marked)))
                    context.fireChannelRead(wrapInboundOut(.end(nil)))
                    context.fireChannelReadComplete()
                }
            }
    }

    /// Takes the HTTP handlers off the client's connection and puts the glue in their place.
    private func splice(context: ChannelHandlerContext, glue: GlueHandler) {
        state = .spliced
        let pipeline = context.pipeline.syncOperations
        do {
            try pipeline.addHandler(glue, position: .after(self))
        } catch {
            context.close(promise: nil)
            return
        }
        if let handler = try? pipeline.handler(type: ConnectionGuardHandler.self) { pipeline.removeHandler(handler, promise: nil) }
        if let handler = try? pipeline.handler(type: BeatArrivalHandler.self) { pipeline.removeHandler(handler, promise: nil) }
        if let handler = try? pipeline.handler(type: HTTP1ToHTTPServerCodec.self) { pipeline.removeHandler(handler, promise: nil) }
        if let handler = try? pipeline.handler(type: HTTPServerPipelineHandler.self) { pipeline.removeHandler(handler, promise: nil) }
        if let handler = try? pipeline.handler(type: HTTPResponseEncoder.self) { pipeline.removeHandler(handler, promise: nil) }
        if let handler = try? pipeline.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self) {
            pipeline.removeHandler(handler, promise: nil)
        }
        pipeline.removeHandler(self, promise: nil)
        GPUPlaneIngressUpgrades.spliced.increment()
    }

    /// The request head sent to the pod, as HTTP/1.1 text.
    static func requestHead(
        _ head: HTTPRequest, target: AppIngress.Target, destination: AppIngress.UpgradeDestination, client: String?, proto: String
    ) -> String
    {
        var text = "\(head.method.rawValue) \(target.rest)\(target.query.map { "?" + $0 } ?? "") HTTP/1.1\r\n"
        text += "Host: \(destination.authority)\r\n"
        let dropped = AppIngress.replacedOnRequest.union(["proxy-authorization", "proxy-connection", "te", "trailer", "transfer-encoding"])
        for field in head.headerFields {
            let name = field.name.canonicalName
            if dropped.contains(name) { continue }
            if name == "authorization", AppIngress.isGPUPlaneToken(field.value) { continue }
            text += "\(field.name.rawName): \(field.value)\r\n"
        }
        if let client { text += "X-Forwarded-For: \(client)\r\n" }
        text += "X-Forwarded-Proto: \(proto)\r\n"
        if let host = head.authority { text += "X-Forwarded-Host: \(host)\r\n" }
        text += "X-Forwarded-Prefix: /apps/\(target.tenant)/\(target.application)\r\n\r\n"
        return text
    }
}

/// Splices two channels of one event loop: what one reads the other writes, reads paused while
/// the other cannot write (back-pressure), a half-close passed on, a close closing both.
final class GlueHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    typealias OutboundIn = NIOAny
    typealias OutboundOut = NIOAny

    private var partner: GlueHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false

    static func pair(_ first: GlueHandler, _ second: GlueHandler) {
        first.partner = second
        second.partner = first
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        // Reads may have been asked for before this handler was here.
        if context.channel.isActive { context.read() }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
    }

    private func partnerWrite(_ data: NIOAny) { context?.write(data, promise: nil) }
    private func partnerFlush() { context?.flush() }
    private func partnerWriteEOF() { context?.close(mode: .output, promise: nil) }
    private func partnerCloseFull() { context?.close(promise: nil) }
    private func partnerBecameWritable() {
        if pendingRead {
            pendingRead = false
            context?.read()
        }
    }
    private var partnerWritable: Bool { context?.channel.isWritable ?? false }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) { partner?.partnerWrite(data) }
    func channelReadComplete(context: ChannelHandlerContext) { partner?.partnerFlush() }
    func channelInactive(context: ChannelHandlerContext) { partner?.partnerCloseFull() }
    func errorCaught(context: ChannelHandlerContext, error: any Error) { partner?.partnerCloseFull() }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            partner?.partnerWriteEOF()
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.partnerBecameWritable() }
    }

    func read(context: ChannelHandlerContext) {
        if partner?.partnerWritable ?? false {
            context.read()
        } else {
            pendingRead = true
        }
    }
}

/// Counts splices on `/metrics`.
enum GPUPlaneIngressUpgrades {
    static let spliced = Counter(label: "gpuplane_ingress_upgrades_total")
}
