import CurlHTTP
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneSystem

extension ContainerEngine.Client {
    /// Whether the engine's store holds `image` (a name, `name:tag`, `name@digest` or id).
    /// Maps to `GET /v1.41/images/{name}/json`.
    public func imageExists(_ image: String) async throws(EngineError) -> Bool {
        let path = ContainerEngine.compatPrefix + "/images/" + Self.segment(image) + "/json"
        let response = try await send(.get, path, retry: .idempotent)
        switch response.status {
        case 200: return true
        case 404: return false
        default: throw Self.refused(response, subject: image)
        }
    }

    /// Pulls `image` (a full reference: `registry/name:tag` or `name@digest`) into the
    /// engine's store, logging in to its registry with `credential` when given, and calls
    /// `progress` as the engine reports layers and bytes (on the client's thread: it must not
    /// block). Returns once the image is in the store.
    ///
    /// Maps to `POST /v1.41/images/create?fromImage=…` (Docker's API, which Podman 4 serves
    /// too), with the credential in the `X-Registry-Auth` header (base64url JSON of username,
    /// password and server address) and nowhere else: not in the URL, not in logs, not in the
    /// error. Both engines answer 200 at once and then stream one JSON object per line: a
    /// layer's `status` ("Pulling fs layer", "Downloading" with `progressDetail`'s `current`
    /// and `total` bytes about once a second, "Download complete", "Already exists"), or an
    /// `error` that ends the pull. Podman 4.3 streams no final status line, so success is the
    /// stream's end without an error and the image present afterwards.
    ///
    /// The engine only says why a pull failed in words (containers/image's or the Docker
    /// daemon's); this is the one place where they are read, and they become codes:
    /// - Throws: ``EngineError/Code/imageNotFound`` (the registry has no such repository or
    ///   tag: `manifest unknown`, `name unknown`, `not found`),
    ///   ``EngineError/Code/registryUnauthorized`` (the registry refused the credential, or
    ///   wants one: `unauthorized`, `authentication required`, `denied`, 401, 403),
    ///   ``EngineError/Code/pullFailed`` (any other failure the engine reported: the registry
    ///   unreachable, TLS, a broken layer), ``EngineError/Code/timeout`` when `timeout` passed
    ///   first (the whole pull), ``EngineError/Code/cancelled``, or
    ///   ``EngineError/Code/unavailable`` (the engine's socket).
    public func pull(
        _ image: String, credential: ContainerEngine.RegistryCredential? = nil, timeout: Duration = .seconds(1800),
        progress: @escaping @Sendable (ContainerEngine.PullProgress) -> Void = { _ in }
    ) async throws(EngineError) {
        var headers: [CurlHTTP.Header] = []
        if let credential { headers.append(CurlHTTP.Header("X-Registry-Auth", try credential.header())) }
        let path = ContainerEngine.compatPrefix + "/images/create"
        let request = CurlHTTP.Request(
            method: .post, url: "http://localhost" + path + Self.queryString([("fromImage", image)]), headers: headers,
            timeout: timeout, connectTimeout: configuration.connectTimeout, unixSocketPath: configuration.socketPath)
        let state = Locked(PullStream())
        let abort = LockedAction()
        let result: Result<CurlHTTP.Response, CurlHTTPError> = await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let cancel = http.stream(
                    request,
                    onData: { bytes in
                        if let changed = state.withLock({ $0.append(bytes) }) { progress(changed) }
                    },
                    completion: { continuation.resume(returning: $0) })
                abort.set(cancel)
                // A cancellation that came before the abort was stored.
                if Task.isCancelled { cancel() }
            }
        } onCancel: {
            abort()
        }
        var outcome = state.withLock { $0.finish() }
        switch result {
        case .success:
            break
        case .failure(let error) where error.code == .httpStatus:
            // Docker answers some failures (a missing repository) with a status, not in the stream.
            guard let response = error.response else { throw Self.transportError(error, path: path) }
            if outcome.error == nil { outcome.error = Self.engineMessage(response) }
            outcome.status = response.status
        case .failure(let error):
            throw Self.transportError(error, path: path).with(subject: image)
        }
        if let message = outcome.error {
            throw Self.pullFailure(message, status: outcome.status, image: image)
        }
        guard try await imageExists(image) else {
            throw EngineError(
                code: .pullFailed, message: "the engine ended the pull of \(image) without an error, but does not hold the image",
                subject: image)
        }
    }

    /// The code of a pull's failure, from the engine's words (see ``pull(_:credential:timeout:progress:)``).
    static func pullFailure(_ message: String, status: Int?, image: String) -> EngineError {
        let text = message.lowercased()
        let code: EngineError.Code
        if status == 401 || status == 403 || text.contains("unauthorized") || text.contains("authentication required")
            || (text.contains("denied") && !text.contains("permission denied")) || text.contains("401 unauthorized") || text.contains("403 forbidden")
            || text.contains("incorrect username or password")
        {
            code = .registryUnauthorized
        } else if status == 404 || text.contains("manifest unknown") || text.contains("name unknown")
            || text.contains("not found") || text.contains("no such image") || text.contains("repository does not exist")
        {
            code = .imageNotFound
        } else {
            code = .pullFailed
        }
        return EngineError(code: code, message: message, httpStatus: status, subject: image)
    }
}

extension EngineError {
    /// The same error about `subject`.
    func with(subject: String) -> EngineError {
        var copy = self
        copy.subject = subject
        return copy
    }
}

extension ContainerEngine {
    /// A login to a registry for one pull: sent to the engine in the pull's `X-Registry-Auth`
    /// header only. Its ``description`` never shows the password.
    public struct RegistryCredential: Sendable, Hashable, CustomStringConvertible {
        /// The registry's host (and port), e.g. `registry.example.com` or `127.0.0.1:5000`.
        public var server: String
        /// The user name.
        public var username: String
        /// The password or token.
        public var password: String

        /// Makes a credential.
        public init(server: String, username: String, password: String) {
            self.server = server
            self.username = username
            self.password = password
        }

        /// `user@server`, without the password.
        public var description: String { "\(username)@\(server)" }

        /// The header's value: base64url of `{"username","password","serveraddress"}`.
        func header() throws(EngineError) -> String {
            struct Wire: Encodable {
                let username: String
                let password: String
                let serveraddress: String
            }
            let json: Data
            do {
                json = try JSONEncoder().encode(Wire(username: username, password: password, serveraddress: server))
            } catch {
                throw EngineError(code: .invalidSpec, message: "cannot encode the registry credential for \(server)")
            }
            return String(json.base64EncodedString().map { $0 == "+" ? "-" : $0 == "/" ? "_" : $0 })
        }
    }

    /// How far a pull got, from the engine's stream: the layers it announced and finished, and
    /// the bytes of those whose size it reported.
    public struct PullProgress: Sendable, Hashable, CustomStringConvertible {
        /// Layers (and the config blob, which Podman counts as one) announced so far.
        public var layers: Int
        /// Of those, the ones downloaded or already present.
        public var layersDone: Int
        /// Bytes downloaded of the layers whose size the engine reported.
        public var bytesDone: Int64
        /// The size of those layers.
        public var bytesTotal: Int64

        /// Makes a progress.
        public init(layers: Int = 0, layersDone: Int = 0, bytesDone: Int64 = 0, bytesTotal: Int64 = 0) {
            self.layers = layers
            self.layersDone = layersDone
            self.bytesDone = bytesDone
            self.bytesTotal = bytesTotal
        }

        /// "2/3 layers, 12.3/45.6 MB" (the bytes once the engine reported a size).
        public var description: String {
            var text = "\(layersDone)/\(layers) layers"
            if bytesTotal > 0 { text += ", \(Self.megabytes(bytesDone))/\(Self.megabytes(bytesTotal)) MB" }
            return text
        }

        static func megabytes(_ bytes: Int64) -> String {
            let tenths = (bytes + 50_000) / 100_000
            return "\(tenths / 10).\(tenths % 10)"
        }
    }
}

/// The state of one pull's stream: the layers seen, and the error that ended it.
struct PullStream {
    private var splitter = JSONLineSplitter()
    private var order: [String] = []
    private var layers: [String: Layer] = [:]
    private var last = ContainerEngine.PullProgress()
    var error: String?
    var status: Int?

    private struct Layer {
        var done = false
        var current: Int64 = 0
        var total: Int64 = 0
    }

    private struct Line: Decodable {
        struct Detail: Decodable {
            var current: Int64?
            var total: Int64?
        }
        struct ErrorDetail: Decodable {
            var message: String?
        }
        var status: String?
        var id: String?
        var progressDetail: Detail?
        var error: String?
        var errorDetail: ErrorDetail?
    }

    /// Appends bytes; returns the progress when it changed.
    mutating func append(_ bytes: UnsafeRawBufferPointer) -> ContainerEngine.PullProgress? {
        for line in splitter.append(bytes) { take(line) }
        return changed()
    }

    /// Ends the stream: what is left is read.
    mutating func finish() -> PullStream {
        if let rest = splitter.flush() { take(rest) }
        return self
    }

    private mutating func take(_ data: Data) {
        guard let line = try? JSONDecoder().decode(Line.self, from: data) else { return }
        if let message = line.errorDetail?.message ?? line.error, !message.isEmpty {
            if error == nil { error = message }
            return
        }
        guard let id = line.id, !id.isEmpty, let status = line.status else { return }
        if layers[id] == nil {
            // "Pulling from library/x" and "Digest: …" name the repository or the image, not a layer.
            guard status.hasPrefix("Pulling fs layer") || status.hasPrefix("Waiting") || status.hasPrefix("Downloading")
                || status.hasPrefix("Already exists") || status.hasPrefix("Download complete")
                || status.hasPrefix("Verifying") || status.hasPrefix("Extracting") || status.hasPrefix("Pull complete")
            else { return }
            order.append(id)
            layers[id] = Layer()
        }
        if status.hasPrefix("Downloading"), let detail = line.progressDetail {
            if let total = detail.total, total > 0 { layers[id]?.total = total }
            if let current = detail.current { layers[id]?.current = current }
        }
        if status.hasPrefix("Download complete") || status.hasPrefix("Already exists") || status.hasPrefix("Pull complete") {
            layers[id]?.done = true
            if let total = layers[id]?.total, total > 0 { layers[id]?.current = total }
        }
    }

    private mutating func changed() -> ContainerEngine.PullProgress? {
        var now = ContainerEngine.PullProgress(layers: order.count)
        for id in order {
            guard let layer = layers[id] else { continue }
            if layer.done { now.layersDone += 1 }
            now.bytesDone += layer.current
            now.bytesTotal += layer.total
        }
        guard now != last else { return nil }
        last = now
        return now
    }
}
