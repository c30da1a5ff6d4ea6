#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneService
#if canImport(Glibc)
import Glibc
#endif

extension NodeAgentMain {
    /// The weights cache's settings.
    static let weightsKeys: [ConfigurationKey] = [
        ConfigurationKey(
            "weights-cache", .string, default: "/var/lib/gpuplane/weights",
            help: "the weights cache's directory (model weights fetched once per node, mounted read-only into servers); 'none' runs without one"),
        ConfigurationKey(
            "weights-cache-size", .string, default: "200GB",
            help: "the weights cache's limit (bytes, or with kB MB GB TB Ki Mi Gi Ti): least recently used weights no container uses are evicted past it"),
        ConfigurationKey(
            "weights-registry-auth-file", .string,
            help: "a containers auth file ({\"auths\": {\"host:port\": {\"auth\": base64(user:password)}}}) with logins to the registries oci:// weights come from"),
        ConfigurationKey(
            "weights-insecure-registries", .string,
            help: "comma-separated host:port of registries oci:// weights are fetched from over plain HTTP (loopback registries always are)"),
        ConfigurationKey(
            "hf-endpoint", .string,
            help: "the Hugging Face Hub's URL for weights; default: $HF_ENDPOINT, else https://huggingface.co"),
    ]

    /// The weights cache's settings from the configuration; nil with `weights-cache none`.
    static func weightsCacheSettings(_ config: Configuration) throws -> WeightsCacheSettings? {
        let directory = try config.string("weights-cache") ?? "/var/lib/gpuplane/weights"
        guard directory != "none", !directory.isEmpty else { return nil }
        guard directory.hasPrefix("/") else { throw StartError(description: "weights-cache must be an absolute path or none, not '\(directory)'") }
        let sizeText = try config.string("weights-cache-size") ?? "200GB"
        guard let size = byteSize(sizeText), size > 0 else {
            throw StartError(description: "weights-cache-size must be a size such as 200GB, 500Gi or 1000000000, not '\(sizeText)'")
        }
        var settings = WeightsCacheSettings(directory: directory, sizeLimitBytes: size)
        if let file = try config.string("weights-registry-auth-file") {
            do {
                settings.registryLogins = try WeightsCacheSettings.registryLogins(authFile: file)
            } catch {
                throw StartError(description: "weights-registry-auth-file: \(error.message)")
            }
        }
        if let list = try config.string("weights-insecure-registries") {
            settings.plainHTTPRegistries = Set(list.split(separator: ",").map { String($0.filter { !$0.isWhitespace }) }.filter { !$0.isEmpty })
        }
        let environment = getenv("HF_ENDPOINT").map { String(cString: $0) }
        let endpoint = try config.string("hf-endpoint") ?? environment ?? "https://huggingface.co"
        guard endpoint.hasPrefix("http://") || endpoint.hasPrefix("https://") else {
            throw StartError(description: "hf-endpoint must be an http:// or https:// URL, not '\(endpoint)'")
        }
        settings.huggingFaceEndpoint = endpoint
        return settings
    }

    /// Bytes of `200GB`, `500Gi`, `1.5TB`, `1000000` (decimal units kB MB GB TB, binary Ki Mi Gi Ti).
    public static func byteSize(_ text: String) -> Int64? {
        let trimmed = String(text.filter { !$0.isWhitespace })
        let digits = trimmed.prefix { $0.isNumber || $0 == "." }
        guard !digits.isEmpty, let number = Double(digits) else { return nil }
        let units: [String: Double] = [
            "": 1, "B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
            "Ki": 1024, "Mi": 1_048_576, "Gi": 1_073_741_824, "Ti": 1_099_511_627_776,
        ]
        guard let unit = units[String(trimmed.dropFirst(digits.count))] else { return nil }
        let value = number * unit
        guard value.isFinite, value >= 0, value < 9e18 else { return nil }
        return Int64(value)
    }
}
