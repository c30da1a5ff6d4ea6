import CurlHTTP
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import GPUPlaneSystem
#if canImport(Glibc)
import Glibc
#endif

/// Fetches an OCI artifact's files through the registry's HTTP API v2: the manifest
/// (`GET /v2/<repository>/manifests/<tag or digest>`, OCI or Docker v2 schema 2), then each
/// layer's blob (`GET /v2/<repository>/blobs/<digest>`), each checked against its sha256
/// digest. A layer with an `org.opencontainers.image.title` annotation is one file of that
/// name (ORAS); a layer without one is a tar (or gzip tar) unpacked into the weights. The
/// content address is the manifest's digest.
///
/// Authentication as registries ask for it (`WWW-Authenticate` on a 401): Basic with the
/// login of ``WeightsCacheSettings/registryLogins`` for the host, or a Bearer token from the
/// realm the registry names (with that login when there is one, anonymous otherwise).
/// Loopback registries and ``WeightsCacheSettings/plainHTTPRegistries`` are spoken to over
/// plain HTTP, every other one over HTTPS.
struct OCIWeightsFetcher {
    let cache: WeightsCache
    let job: WeightsFetchJob

    static let titleAnnotation = "org.opencontainers.image.title"
    static let manifestTypes = [
        "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json",
    ]
    static let indexTypes = ["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"]

    struct Descriptor: Decodable {
        var mediaType: String?
        var digest: String
        var size: Int64
        var annotations: [String: String]?
    }

    struct Manifest: Decodable {
        var mediaType: String?
        var layers: [Descriptor]?
        var manifests: [Descriptor]?
    }

    func fetch(_ reference: WeightsSource.OCIReference) async throws(WeightsError) -> WeightsEntry {
        let source = WeightsSource.oci(reference)
        let base = Self.baseURL(reference.registry, plain: cache.settings.plainHTTPRegistries)
        var auth = RegistryAuth(cache: cache, registry: reference.registry, repository: reference.repository)
        let manifestURL = "\(base)/v2/\(reference.repository)/manifests/\(reference.reference)"
        let answer = try await auth.get(manifestURL, accept: (Self.manifestTypes + Self.indexTypes).joined(separator: ", "), what: "\(reference)")
        let digest = "sha256:" + PortableSHA256.hex(PortableSHA256.hash(Array(answer.body)))
        if let pinned = reference.digest, pinned != digest {
            throw WeightsError(.verification, "\(reference): the registry's manifest has digest \(digest), not \(pinned)")
        }
        let manifest: Manifest
        do {
            manifest = try JSONDecoder().decode(Manifest.self, from: answer.body)
        } catch {
            throw WeightsError(.invalid, "\(reference): the registry's manifest is not an OCI or Docker image manifest")
        }
        if manifest.manifests != nil || Self.indexTypes.contains(manifest.mediaType ?? "") {
            throw WeightsError(.invalid, "\(reference) is an image index (several manifests); name one manifest by its digest")
        }
        let layers = manifest.layers ?? []
        guard !layers.isEmpty else { throw WeightsError(.invalid, "\(reference): the manifest has no layers, so no files") }
        let address = WeightsCache.ociAddress(digest)
        if let cached = cache.existing(address, source: source) { return cached }

        let total = layers.reduce(Int64(0)) { $0 + $1.size }
        _ = job.record(done: 0, total: total, interval: .zero, now: .now)
        cache.signal()
        let partial = try cache.partialPath()
        do throws(WeightsError) {
            var done: Int64 = 0
            var names = Set<String>()
            for layer in layers {
                let hex = try Self.hex(of: layer.digest, in: reference)
                let title = layer.annotations?[Self.titleAnnotation]
                let path: String
                if let title {
                    guard WeightsSource.isRelativeFile(title), names.insert(title).inserted else {
                        throw WeightsError(.invalid, "\(reference): layer \(layer.digest) is titled '\(title)', not a relative file name (or twice)")
                    }
                    path = try WeightsDownload.place(title, in: partial)
                } else {
                    path = partial + "/.layer-" + hex
                }
                let blobURL = "\(base)/v2/\(reference.repository)/blobs/\(layer.digest)"
                let what = "\(reference) layer \(title ?? layer.digest)"
                let headers = try await auth.headers(probing: blobURL, what: what)
                let got = try await WeightsDownload(cache: cache, job: job, offset: done, total: total)
                    .run(url: blobURL, headers: headers, to: path, what: what)
                guard got.sha256 == hex else {
                    throw WeightsError(.verification, "\(what): its content has sha256:\(got.sha256), not \(layer.digest) as the manifest says")
                }
                guard got.bytes == layer.size else {
                    throw WeightsError(.verification, "\(what): \(got.bytes) bytes, not \(layer.size) as the manifest says")
                }
                done += got.bytes
                if title == nil { try await Self.unpack(path, into: partial, mediaType: layer.mediaType ?? "", what: what) }
            }
            return try cache.commit(partial, address: address, source: source)
        } catch {
            WeightsFiles.removeTree(partial)
            throw error
        }
    }

    static func hex(of digest: String, in reference: WeightsSource.OCIReference) throws(WeightsError) -> String {
        guard digest.hasPrefix("sha256:"), digest.count == 71 else {
            throw WeightsError(.invalid, "\(reference): layer digest \(digest) is not sha256:<64 hex>")
        }
        return String(digest.dropFirst(7))
    }

    /// Unpacks a tar layer (gzip when its media type or first bytes say so) with the host's
    /// `tar`, which refuses absolute names and `..`; the layer's file is removed afterwards.
    static func unpack(_ path: String, into directory: String, mediaType: String, what: String) async throws(WeightsError) {
        let gzip = mediaType.hasSuffix("gzip") || (WeightsFiles.readPrefix(path, 2) == [0x1f, 0x8b])
        let candidates: [String] = ["/usr/bin/tar", "/bin/tar"]
        let tar = candidates.first { access($0, X_OK) == 0 } ?? "/usr/bin/tar"
        let arguments = ["-x", gzip ? "-z" : nil, "-f", path, "-C", directory, "--no-same-owner", "--no-same-permissions"].compactMap { $0 }
        let failure = await BlockingCall.run(name: "gpuplane-untar") { () -> String? in
            do throws(PodNetworkError) {
                try HostCommand.run(tar, arguments)
                return nil
            } catch {
                return error.message
            }
        }
        unlink(path)
        if let failure { throw WeightsError(.invalid, "\(what): cannot unpack the tar layer: \(failure)") }
    }

    /// `http://registry` for loopback registries and those listed plain, else `https://registry`.
    static func baseURL(_ registry: String, plain: Set<String>) -> String {
        let host = registry.split(separator: ":").first.map(String.init) ?? registry
        let loopback = host == "localhost" || host.hasPrefix("127.") || registry.hasPrefix("[::1]")
        return (loopback || plain.contains(registry) ? "http://" : "https://") + registry
    }
}

/// The `Authorization` a registry wants, found out on its first 401 and kept for the fetch.
struct RegistryAuth {
    let cache: WeightsCache
    let registry: String
    let repository: String
    var header: CurlHTTP.Header?

    init(cache: WeightsCache, registry: String, repository: String) {
        self.cache = cache
        self.registry = registry
        self.repository = repository
    }

    var login: WeightsRegistryLogin? { cache.settings.registryLogins[RegistryCredential.normalized(registry)] }

    /// GETs a small document (a manifest), authenticating as the registry asks.
    mutating func get(_ url: String, accept: String, what: String) async throws(WeightsError) -> CurlHTTP.Response {
        var answer = try await send(url, accept: accept, what: what)
        if answer.status == 401 {
            try await authenticate(answer, what: what)
            answer = try await send(url, accept: accept, what: what)
        }
        guard answer.isSuccess else {
            if answer.status == 404 {
                throw WeightsError(.notFound, "\(what) not found in registry \(registry) (HTTP 404: no such repository, tag or digest)")
            }
            if answer.status == 401 || answer.status == 403 {
                throw WeightsError(
                    .unauthorized,
                    login == nil
                        ? "registry \(registry) wants credentials for \(what) (HTTP \(answer.status)); add a login for \(registry) to weights-registry-auth-file"
                        : "registry \(registry) refused the login of weights-registry-auth-file for \(what) (HTTP \(answer.status))")
            }
            throw WeightsDownload.statusError(answer.status, what: what, body: answer.body)
        }
        return answer
    }

    /// The headers a blob GET needs (the auth found by ``get(_:accept:what:)``).
    mutating func headers(probing url: String, what: String) async throws(WeightsError) -> [CurlHTTP.Header] {
        header.map { [$0] } ?? []
    }

    private func send(_ url: String, accept: String, what: String) async throws(WeightsError) -> CurlHTTP.Response {
        var headers = [CurlHTTP.Header("Accept", accept)]
        if let header { headers.append(header) }
        let request = CurlHTTP.Request(url: url, headers: headers, timeout: cache.settings.requestTimeout, connectTimeout: .seconds(10))
        let policy = CurlHTTP.RetryPolicy.doubling(retries: max(0, cache.settings.attempts - 1), firstDelay: .milliseconds(500))
        switch await cache.http.performResult(request, retrying: policy, idempotence: .idempotent) {
        case .success(let response): return response
        case .failure(let error):
            throw WeightsError(.unreachable, "registry \(registry) did not answer for \(what): \(error.message)")
        }
    }

    /// Reads the challenge of a 401 and gets the header it asks for.
    private mutating func authenticate(_ answer: CurlHTTP.Response, what: String) async throws(WeightsError) {
        let challenge = answer.header("WWW-Authenticate") ?? ""
        let scheme = challenge.prefix { $0 != " " }.lowercased()
        let parameters = Self.parameters(String(challenge.dropFirst(scheme.count)))
        switch scheme {
        case "basic":
            guard let login else {
                throw WeightsError(
                    .unauthorized, "registry \(registry) wants credentials for \(what); add a login for \(registry) to weights-registry-auth-file")
            }
            header = CurlHTTP.Header("Authorization", "Basic " + Data("\(login.username):\(login.password)".utf8).base64EncodedString())
        case "bearer":
            guard let realm = parameters["realm"] else {
                throw WeightsError(.invalid, "registry \(registry) asks for a bearer token but names no realm")
            }
            var query: [String] = []
            if let service = parameters["service"] { query.append("service=\(Self.escape(service))") }
            query.append("scope=\(Self.escape(parameters["scope"] ?? "repository:\(repository):pull"))")
            let url = realm + (realm.contains("?") ? "&" : "?") + query.joined(separator: "&")
            var headers: [CurlHTTP.Header] = []
            if let login {
                headers.append(CurlHTTP.Header("Authorization", "Basic " + Data("\(login.username):\(login.password)".utf8).base64EncodedString()))
            }
            let request = CurlHTTP.Request(url: url, headers: headers, timeout: cache.settings.requestTimeout, connectTimeout: .seconds(10))
            let policy = CurlHTTP.RetryPolicy.doubling(retries: max(0, cache.settings.attempts - 1), firstDelay: .milliseconds(500))
            let response: CurlHTTP.Response
            switch await cache.http.performResult(request, retrying: policy, idempotence: .idempotent) {
            case .success(let value): response = value
            case .failure(let error): throw WeightsError(.unreachable, "the token service of registry \(registry) did not answer: \(error.message)")
            }
            struct Token: Decodable {
                var token: String?
                var access_token: String?
            }
            guard response.isSuccess, let token = try? JSONDecoder().decode(Token.self, from: response.body),
                let value = token.token ?? token.access_token
            else {
                throw WeightsError(.unauthorized, "the token service of registry \(registry) gave no token for \(what) (HTTP \(response.status))")
            }
            header = CurlHTTP.Header("Authorization", "Bearer " + value)
        default:
            throw WeightsError(.unauthorized, "registry \(registry) refused \(what) (HTTP 401) without a challenge this agent knows")
        }
    }

    /// `key="value"` pairs of a challenge.
    static func parameters(_ text: String) -> [String: String] {
        var out: [String: String] = [:]
        var rest = Substring(text)
        while let equals = rest.firstIndex(of: "=") {
            let key = rest[..<equals].trimmingPrefix { $0 == " " || $0 == "," }
            rest = rest[rest.index(after: equals)...]
            var value = ""
            if rest.first == "\"" {
                rest = rest.dropFirst()
                value = String(rest.prefix { $0 != "\"" })
                rest = rest.dropFirst(value.count + 1)
            } else {
                value = String(rest.prefix { $0 != "," })
                rest = rest.dropFirst(value.count)
            }
            out[key.lowercased()] = value
        }
        return out
    }

    static func escape(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            let c = Character(Unicode.Scalar(byte))
            if c.isLetter && byte < 128 || c.isNumber && byte < 128 || "-_.~:/".contains(c) { out.append(c) } else {
                out += "%" + String(byte, radix: 16, uppercase: true).leftPadded(2)
            }
        }
        return out
    }
}

extension String {
    fileprivate func leftPadded(_ width: Int) -> String { count >= width ? self : String(repeating: "0", count: width - count) + self }
}

extension WeightsFiles {
    /// The first `count` bytes of a file.
    static func readPrefix(_ path: String, _ count: Int) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: count)
        let n = read(fd, &buffer, count)
        return n > 0 ? Array(buffer[0..<n]) : []
    }
}
