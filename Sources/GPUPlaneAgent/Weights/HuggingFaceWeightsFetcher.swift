import CurlHTTP
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore

/// Fetches a Hugging Face repository at a revision through the Hub's HTTP API at
/// ``WeightsCacheSettings/huggingFaceEndpoint`` (the `HF_ENDPOINT` that `huggingface_hub`
/// honours): `GET /api/models/<repo>/revision/<revision>?blobs=true` gives the commit and
/// the files (with their sizes, and for LFS files their sha256), then
/// `GET /<repo>/resolve/<commit>/<file>` each file, checked against its LFS sha256 (else its
/// size). A token (the tenant secret a deployment's `hf.token_secret` names) goes in
/// `Authorization: Bearer` to the Hub only, never to a host it redirects to, and nowhere
/// else. The content address is the commit.
struct HuggingFaceWeightsFetcher {
    let cache: WeightsCache
    let job: WeightsFetchJob

    struct ModelInfo: Decodable {
        struct Sibling: Decodable {
            struct LFS: Decodable {
                var sha256: String?
                var size: Int64?
            }
            var rfilename: String
            var size: Int64?
            var lfs: LFS?
        }
        var sha: String?
        var siblings: [Sibling]?
    }

    func fetch(repo: String, revision: String, token: String?) async throws(WeightsError) -> WeightsEntry {
        let source = WeightsSource.huggingFace(repo: repo, revision: revision)
        var endpoint = cache.settings.huggingFaceEndpoint
        while endpoint.hasSuffix("/") { endpoint.removeLast() }
        let what = "Hugging Face \(repo)@\(revision)"
        var headers: [CurlHTTP.Header] = []
        if let token, !token.isEmpty { headers.append(CurlHTTP.Header("Authorization", "Bearer " + token)) }
        let infoURL = "\(endpoint)/api/models/\(repo)/revision/\(Self.escape(revision))?blobs=true"
        let request = CurlHTTP.Request(url: infoURL, headers: headers, timeout: cache.settings.requestTimeout, connectTimeout: .seconds(10))
        let policy = CurlHTTP.RetryPolicy.doubling(retries: max(0, cache.settings.attempts - 1), firstDelay: .milliseconds(500))
        let answer: CurlHTTP.Response
        switch await cache.http.performResult(request, retrying: policy, idempotence: .idempotent) {
        case .success(let response): answer = response
        case .failure(let error): throw WeightsError(.unreachable, "\(what): the Hub at \(endpoint) did not answer: \(error.message)")
        }
        switch answer.status {
        case 200..<300: break
        case 401, 403:
            throw WeightsError(
                .unauthorized,
                token == nil
                    ? "\(what): the Hub refused (HTTP \(answer.status)); a private or gated repository needs hf.token_secret naming a secret with a token"
                    : "\(what): the Hub refused the token of hf.token_secret (HTTP \(answer.status))")
        case 404: throw WeightsError(.notFound, "\(what): no such repository or revision on \(endpoint) (HTTP 404)")
        default: throw WeightsDownload.statusError(answer.status, what: what, body: answer.body)
        }
        let info: ModelInfo
        do {
            info = try JSONDecoder().decode(ModelInfo.self, from: answer.body)
        } catch {
            throw WeightsError(.invalid, "\(what): the Hub's model info is not what huggingface_hub reads (sha, siblings)")
        }
        guard let commit = info.sha, WeightsCache.isCommit(commit) else {
            throw WeightsError(.invalid, "\(what): the Hub's model info names no commit (sha)")
        }
        let files = info.siblings ?? []
        guard !files.isEmpty else { throw WeightsError(.invalid, "\(what): the repository has no files") }
        let address = "hf-\(commit)"
        if let cached = cache.existing(address, source: source) { return cached }
        let sizes = files.map { $0.lfs?.size ?? $0.size }
        let total: Int64? = sizes.contains(where: { $0 == nil }) ? nil : sizes.reduce(Int64(0)) { $0 + ($1 ?? 0) }
        _ = job.record(done: 0, total: total, interval: .zero, now: .now)
        cache.signal()
        let partial = try cache.partialPath()
        do throws(WeightsError) {
            var done: Int64 = 0
            for file in files {
                guard WeightsSource.isRelativeFile(file.rfilename) else {
                    throw WeightsError(.invalid, "\(what): file name '\(file.rfilename)' is not a relative path")
                }
                let path = try WeightsDownload.place(file.rfilename, in: partial)
                let url = "\(endpoint)/\(repo)/resolve/\(commit)/\(file.rfilename.split(separator: "/").map { Self.escape(String($0)) }.joined(separator: "/"))"
                let name = "\(what) file \(file.rfilename)"
                let got = try await WeightsDownload(cache: cache, job: job, offset: done, total: total)
                    .run(url: url, headers: headers, to: path, what: name)
                if let sha = file.lfs?.sha256, got.sha256 != sha.lowercased() {
                    throw WeightsError(.verification, "\(name): its content has sha256 \(got.sha256), not \(sha) as the Hub's LFS pointer says")
                }
                if let size = file.lfs?.size ?? file.size, got.bytes != size {
                    throw WeightsError(.verification, "\(name): \(got.bytes) bytes, not \(size) as the Hub says")
                }
                done += got.bytes
            }
            return try cache.commit(partial, address: address, source: source)
        } catch {
            WeightsFiles.removeTree(partial)
            throw error
        }
    }

    /// Percent-escapes everything but unreserved characters (a revision's `/` too).
    static func escape(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            let scalar = Unicode.Scalar(byte)
            let unreserved = (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a)
                || "-_.~".unicodeScalars.contains(scalar)
            if unreserved {
                out.unicodeScalars.append(scalar)
            } else {
                let hex = String(byte, radix: 16, uppercase: true)
                out += "%" + (hex.count == 1 ? "0" + hex : hex)
            }
        }
        return out
    }
}
