#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

extension ContainerEngine.Client {
    /// Whether the engine answers. Maps to `GET /_ping`.
    public func ping() async throws(EngineError) {
        let response = try await send(.get, "/_ping", retry: .idempotent)
        guard response.status == 200 else { throw Self.refused(response, subject: "/_ping") }
    }

    /// Asks the engine what it is. Maps to `GET /version`: Podman lists a component named
    /// "Podman Engine"; anything else that serves API 1.41 or later is taken for Docker.
    func detectEngine() async throws(EngineError) -> ContainerEngine.EngineInfo {
        let version = try await call(.get, "/version", retry: .idempotent, as: WireVersion.self)
        let apiVersion = version.ApiVersion ?? ""
        if let podman = version.Components?.first(where: { $0.Name == "Podman Engine" }) {
            let engineVersion = podman.Version ?? version.Version ?? ""
            guard let major = Int(engineVersion.split(separator: ".").first ?? ""), major >= 4 else {
                throw EngineError(
                    code: .unsupportedEngine, message: "Podman \(engineVersion) has no libpod v4 API; 4.0 or later is needed")
            }
            return ContainerEngine.EngineInfo(kind: .podman, version: engineVersion, apiVersion: apiVersion)
        }
        let parts = apiVersion.split(separator: ".").compactMap { Int($0) }
        guard parts.count == 2, (parts[0], parts[1]) >= (1, 41) else {
            throw EngineError(
                code: .unsupportedEngine, message: "engine API \(apiVersion) is older than 1.41 (Docker 20.10)")
        }
        return ContainerEngine.EngineInfo(kind: .docker, version: version.Version ?? "", apiVersion: apiVersion)
    }
}
