/// Where a Mode 2/3 pod reaches its model: the inference gateway's owner-scoped URL, injected
/// as `NXL_INFERENCE_URL`.
///
/// The URL is `<gateway>/v1/inference/<tenant>/<slug>/<key>/v1`, an OpenAI-protocol base URL
/// (clients append `/chat/completions`). The key is an HMAC of the tenant and slug under a
/// cluster secret, so the URL itself is the credential: it reaches that tenant's model
/// server for that slug and nothing else, and needs no API key.
public enum InferenceEndpoint {
    /// The path segment before the tenant.
    public static let pathPrefix = "/v1/inference/"
    /// What stands in for the key of a replica admitted before keys existed.
    public static let missingKey = "no-key"

    /// `/v1/inference/<tenant>/<slug>/<key>/v1`.
    public static func path(tenant: String, slug: String, key: String?) -> String {
        "\(pathPrefix)\(tenant)/\(slug)/\(key ?? missingKey)/v1"
    }

    /// The full URL under `gatewayBaseURL` (trailing slashes ignored).
    public static func url(gatewayBaseURL: String, tenant: String, slug: String, key: String?) -> String {
        var base = gatewayBaseURL
        while base.hasSuffix("/") { base.removeLast() }
        return base + path(tenant: tenant, slug: slug, key: key)
    }
}
