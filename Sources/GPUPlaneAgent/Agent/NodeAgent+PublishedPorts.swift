#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore

extension NodeAgent {
    /// How often the published-port filter is checked against the host's tables (and the
    /// api-servers' names resolved again).
    static let publishedPortGuardInterval = Duration.seconds(10)

    /// Keeps the published-port filter (``PublishedPortGuard``) in place while the agent runs:
    /// written at start, then compared with the host's tables every
    /// ``publishedPortGuardInterval`` and written again when a name resolves elsewhere or
    /// anyone flushed or edited the chain. The chain stays when the agent stops, as its
    /// containers do: their ports stay guarded.
    func publishedPortGuardLoop(_ sources: [String]) async {
        let guardRules = PublishedPortGuard(ports: configuration.modelServerPorts)
        var installed: (allowed: [String], listing: String)?
        var failing = false
        while !Task.isCancelled {
            let outcome = await BlockingCall.run(name: "gpuplane-published-ports") { [installed] () -> Result<(allowed: [String], listing: String, unresolved: [String])?, PodNetworkError> in
                let (allowed, unresolved) = PublishedPortGuard.resolve(sources)
                do throws(PodNetworkError) {
                    if let installed, installed.allowed == allowed, (try? guardRules.listing()) == installed.listing { return .success(nil) }
                    return .success((allowed, try guardRules.install(allowed: allowed), unresolved))
                } catch {
                    return .failure(error)
                }
            }
            switch outcome {
            case .success(nil):
                break
            case .success(let written?):
                if !written.unresolved.isEmpty {
                    logger.warning(
                        "published-ports-from names that do not resolve; their api-servers cannot reach this node's model servers",
                        metadata: ["unresolved": "\(written.unresolved.joined(separator: ","))"])
                }
                logger.info(
                    "published ports admit only these sources and the host",
                    metadata: ["ports": "\(configuration.modelServerPorts.lowerBound)-\(configuration.modelServerPorts.upperBound)",
                               "sources": "\(written.allowed.joined(separator: ","))", "chain": "\(guardRules.chain)"])
                installed = (written.allowed, written.listing)
                failing = false
            case .failure(let error):
                if !failing { logger.error("cannot filter the published ports; will retry", metadata: ["error": "\(error)"]) }
                failing = true
                installed = nil
            }
            try? await Task.sleep(for: failing ? .seconds(2) : Self.publishedPortGuardInterval)
        }
    }
}
