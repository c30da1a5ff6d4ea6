#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneSystem

extension CurlHTTP {
    /// An HTTP client with its own libcurl thread and connection pool. Thread-safe; share one
    /// per process and peer (one for etcd, one for the container engine).
    ///
    /// ```swift
    /// let http = CurlHTTP.Client(name: "engine-curl")
    /// let answer = try await http.perform(
    ///     CurlHTTP.Request(url: "http://localhost/_ping", unixSocketPath: "/run/podman/podman.sock"))
    /// ```
    public final class Client: Sendable {
        let loop: CurlLoop

        /// Starts the client's thread. `name` names the thread (for debuggers and `top -H`);
        /// `maxConnections` bounds the pool of idle connections kept for reuse.
        public init(name: String = "curl-http", maxConnections: Int = 64) {
            loop = CurlLoop(name: name, maxConnections: maxConnections)
        }

        deinit { loop.shutdown() }

        /// Transfers and new connections so far; `connectionsOpened` far below `transfers`
        /// shows connection reuse.
        public var statistics: Statistics { loop.statistics }

        /// Stops the client's thread. Transfers still running fail with
        /// ``CurlHTTPError/Code/shutDown``, and so does every later call.
        public func shutdown() { loop.shutdown() }

        /// Performs one exchange and returns the answer, whatever its status.
        ///
        /// Cancelling the calling task aborts the transfer.
        /// - Throws: ``CurlHTTPError`` when no answer came (``CurlHTTPError/Code/couldNotConnect``,
        ///   ``CurlHTTPError/Code/timeout``, ``CurlHTTPError/Code/cancelled``,
        ///   ``CurlHTTPError/Code/shutDown``, ``CurlHTTPError/Code/transfer``).
        public func perform(_ request: Request) async throws(CurlHTTPError) -> Response {
            let result = await performResult(request)
            return try result.get()
        }

        /// ``perform(_:)`` as a `Result`, for callers that switch on the outcome.
        public func performResult(_ request: Request) async -> Result<Response, CurlHTTPError> {
            let box = TransferBox()
            let loop = self.loop
            return await withTaskCancellationHandler {
                await withCheckedContinuation { (continuation: CheckedContinuation<Result<Response, CurlHTTPError>, Never>) in
                    let transfer = CurlTransfer(request: request) { continuation.resume(returning: $0) }
                    box.set(transfer)
                    loop.submit(transfer)
                    if Task.isCancelled { loop.cancel(transfer) }
                }
            } onCancel: {
                if let transfer = box.get() { loop.cancel(transfer) }
            }
        }

        /// The callback form of ``perform(_:)``, for callers that must not wait on Swift's
        /// cooperative pool (lease keep-alives on their own thread): `completion` is called once,
        /// on the client's thread, with the whole answer, and must not block. Returns the
        /// function that aborts the transfer.
        public func perform(
            _ request: Request, completion: @escaping @Sendable (Result<Response, CurlHTTPError>) -> Void
        ) -> @Sendable () -> Void {
            let transfer = CurlTransfer(request: request, completion: completion)
            let loop = self.loop
            loop.submit(transfer)
            return { loop.cancel(transfer) }
        }

        /// Starts a streaming exchange (logs, events, watches): the body of a 2xx answer
        /// arrives in ``BodyStream/chunks`` as the server sends it, split wherever the network
        /// split it.
        ///
        /// The chunks end without error when the server ends the body, and with a
        /// ``CurlHTTPError`` otherwise: ``CurlHTTPError/Code/httpStatus`` (with the whole
        /// answer in ``CurlHTTPError/response``) when the status was not 2xx, or a transport
        /// code. Ending the iteration early, or ``BodyStream/cancel()``, aborts the transfer.
        /// The request's ``Request/timeout`` bounds the whole stream; leave it nil for streams
        /// that last. Chunks are buffered without bound until read.
        public func stream(_ request: Request) -> BodyStream {
            let (chunks, continuation) = AsyncThrowingStream<Data, any Error>.makeStream()
            let transfer = CurlTransfer(
                request: request,
                onData: { bytes in continuation.yield(Data(bytes)) },
                completion: { result in
                    switch result {
                    case .success: continuation.finish()
                    case .failure(let error): continuation.finish(throwing: error)
                    }
                })
            let loop = self.loop
            continuation.onTermination = { _ in loop.cancel(transfer) }
            loop.submit(transfer)
            return BodyStream(chunks: chunks, cancelAction: { loop.cancel(transfer) })
        }

        /// Starts an exchange and returns as soon as the answer's status and headers are in,
        /// with its body to read as it arrives: what a proxy needs. Unlike
        /// ``stream(_:)-(Request)``, any status is an answer, and its body streams too.
        ///
        /// Cancelling the calling task while it waits for the head aborts the transfer; after
        /// that, ending the body's iteration early or ``StreamedResponse/cancel()`` does.
        /// - Throws: ``CurlHTTPError`` when no answer came (``CurlHTTPError/Code/couldNotConnect``,
        ///   ``CurlHTTPError/Code/timeout``, ``CurlHTTPError/Code/cancelled``…).
        public func exchange(_ request: Request) async throws(CurlHTTPError) -> StreamedResponse {
            let (chunks, continuation) = AsyncThrowingStream<Data, any Error>.makeStream()
            let box = TransferBox()
            let loop = self.loop
            let result = await withTaskCancellationHandler {
                await withCheckedContinuation { (head: CheckedContinuation<Result<StreamedResponse, CurlHTTPError>, Never>) in
                    // The head, the chunks and the completion all come on the loop thread, in order.
                    let answered = Locked(false)
                    let cancel: @Sendable () -> Void = { if let t = box.get() { loop.cancel(t) } }
                    let transfer = CurlTransfer(
                        request: request,
                        onData: { bytes in continuation.yield(Data(bytes)) },
                        onHead: { status, headers in
                            answered.withLock { $0 = true }
                            head.resume(returning: .success(
                                StreamedResponse(status: status, headers: headers, body: chunks, cancelAction: cancel)))
                        },
                        completion: { result in
                            let early = answered.withLock { done -> Bool in
                                defer { done = true }
                                return !done
                            }
                            switch result {
                            case .success(let response):
                                if early {
                                    if !response.body.isEmpty { continuation.yield(response.body) }
                                    head.resume(returning: .success(
                                        StreamedResponse(status: response.status, headers: response.headers, body: chunks, cancelAction: cancel)))
                                }
                                continuation.finish()
                            case .failure(let error):
                                if early { head.resume(returning: .failure(error)) }
                                continuation.finish(throwing: error)
                            }
                        })
                    box.set(transfer)
                    continuation.onTermination = { _ in loop.cancel(transfer) }
                    loop.submit(transfer)
                    if Task.isCancelled { loop.cancel(transfer) }
                }
            } onCancel: {
                if let transfer = box.get() { loop.cancel(transfer) }
            }
            return try result.get()
        }

        /// The callback form of ``stream(_:)``, for callers that split the body themselves on
        /// the client's thread: `onData` gets each chunk of a 2xx answer, `completion` is
        /// called once when the transfer ends. Both run on the client's thread and must not
        /// block. Returns the function that aborts the transfer.
        public func stream(
            _ request: Request, onData: @escaping @Sendable (UnsafeRawBufferPointer) -> Void,
            completion: @escaping @Sendable (Result<Response, CurlHTTPError>) -> Void
        ) -> @Sendable () -> Void {
            let transfer = CurlTransfer(request: request, onData: onData, completion: completion)
            let loop = self.loop
            loop.submit(transfer)
            return { loop.cancel(transfer) }
        }
    }

    /// An answer whose status and headers are in and whose body is still coming; see
    /// ``Client/exchange(_:)``.
    public struct StreamedResponse: Sendable {
        /// The HTTP status code.
        public let status: Int
        /// The headers, in the order received.
        public let headers: [Header]
        /// The body's chunks as the server sends them, whatever the status; the sequence throws
        /// ``CurlHTTPError`` when the transfer fails midway.
        public let body: AsyncThrowingStream<Data, any Error>
        let cancelAction: @Sendable () -> Void

        /// The value of the first header called `name` (case-insensitive).
        public func header(_ name: String) -> String? {
            let wanted = name.lowercased()
            return headers.first { $0.name.lowercased() == wanted }?.value
        }

        /// Aborts the transfer; ``body`` then ends with ``CurlHTTPError/Code/cancelled``.
        public func cancel() { cancelAction() }
    }

    /// The body of a streaming answer; see ``Client/stream(_:)-(Request)``.
    public struct BodyStream: Sendable {
        /// The body's chunks; the sequence throws ``CurlHTTPError``.
        public let chunks: AsyncThrowingStream<Data, any Error>
        let cancelAction: @Sendable () -> Void

        /// Aborts the transfer; ``chunks`` then ends with ``CurlHTTPError/Code/cancelled``.
        public func cancel() { cancelAction() }
    }
}

/// The transfer of one `perform`, handed from the continuation to the cancellation handler.
final class TransferBox: @unchecked Sendable {
    private let lock = Lock()
    private var transfer: CurlTransfer?
    func set(_ t: CurlTransfer) { lock.withLock { transfer = t } }
    func get() -> CurlTransfer? { lock.withLock { transfer } }
}
