#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

extension ContainerEngine.Client {
    /// A bridge network as the engine reports it.
    public struct NetworkInfo: Sendable, Hashable {
        /// Its name.
        public var name: String
        /// Its IPv4 subnets, in CIDR notation.
        public var subnets: [String]
    }

    /// The bridge network `name`, or nil when the engine has none of that name.
    /// Maps to `GET /v1.41/networks/{name}` (both engines).
    public func network(_ name: String) async throws(EngineError) -> NetworkInfo? {
        struct Wire: Decodable {
            struct IPAM: Decodable {
                struct Config: Decodable { var Subnet: String? }
                var Config: [Config]?
            }
            var Name: String?
            var IPAM: IPAM?
        }
        let path = ContainerEngine.compatPrefix + "/networks/" + Self.segment(name)
        do {
            let wire = try await call(.get, path, retry: .idempotent, subject: name, as: Wire.self)
            return NetworkInfo(name: wire.Name ?? name, subnets: (wire.IPAM?.Config ?? []).compactMap(\.Subnet))
        } catch where error.code == .notFound {
            return nil
        }
    }

    /// Creates the bridge network `name` with `subnet` (CIDR), `gateway` as the bridge's
    /// address and `interface` as the bridge's name, without the engine's DNS (names come from
    /// the node-agent's hosts files). On Podman it maps to `POST /v4.0.0/libpod/networks/create`;
    /// on Docker to `POST /v1.41/networks/create`.
    /// - Throws: ``EngineError/Code/engineRefused`` with the engine's words (a taken subnet, a name
    ///   in use), or a transport code.
    public func createNetwork(name: String, subnet: String, gateway: String, interface: String) async throws(EngineError) {
        struct Subnet: Encodable { var subnet: String; var gateway: String }
        struct Libpod: Encodable {
            var name: String
            var driver = "bridge"
            var network_interface: String
            var subnets: [Subnet]
            var dns_enabled = false
            var `internal` = false
            var ipv6_enabled = false
        }
        struct DockerConfig: Encodable { var Subnet: String; var Gateway: String }
        struct DockerIPAM: Encodable { var Config: [DockerConfig] }
        struct Docker: Encodable {
            var Name: String
            var Driver = "bridge"
            var CheckDuplicate = true
            var IPAM: DockerIPAM
            var Options: [String: String]
        }
        let info = try await engine()
        let path: String
        let body: Data
        switch info.kind {
        case .podman:
            path = ContainerEngine.libpodPrefix + "/networks/create"
            body = try Self.encode(Libpod(name: name, network_interface: interface, subnets: [Subnet(subnet: subnet, gateway: gateway)]))
        case .docker:
            path = ContainerEngine.compatPrefix + "/networks/create"
            body = try Self.encode(Docker(
                Name: name, IPAM: DockerIPAM(Config: [DockerConfig(Subnet: subnet, Gateway: gateway)]),
                Options: ["com.docker.network.bridge.name": interface]))
        }
        let response = try await send(.post, path, body: body, retry: .onlyIfNotSent)
        guard response.status == 200 || response.status == 201 else { throw Self.refused(response, subject: name) }
    }
}
