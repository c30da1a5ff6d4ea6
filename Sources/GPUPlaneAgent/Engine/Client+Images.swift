#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

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
}
