import CurlHTTP
import Foundation

extension CurlHTTP.Request {
    /// A call to a gpuplane api-server, as the fixtures and tests make it: `token` (when
    /// given) as the bearer, then `headers`.
    public static func api(
        _ method: String, _ url: String, token: String?, headers: [CurlHTTP.Header] = [], body: Data?,
        timeout: Duration, tls: CurlHTTP.TLS? = nil
    ) -> CurlHTTP.Request {
        CurlHTTP.Request(
            method: CurlHTTP.Method(method), url: url,
            headers: (token.map { [CurlHTTP.Header("Authorization", "Bearer \($0)")] } ?? []) + headers,
            body: body, timeout: timeout, tls: tls)
    }
}
