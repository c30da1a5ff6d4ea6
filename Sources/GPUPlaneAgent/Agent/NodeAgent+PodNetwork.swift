#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore

extension NodeAgent {
    /// Prepares the node's pod network (retrying with doubling pauses up to a minute), then
    /// brings it up to date with the api-server's view every
    /// ``PodNetworkSettings/syncInterval``: routes to the other nodes' subnets, names and rules
    /// of the applications whose pods run here. Until the network exists, application pods fail
    /// to start and are retried with the restart backoff.
    func podNetworkLoop(_ network: PodNetwork) async {
        var pause = Duration.milliseconds(500)
        while !Task.isCancelled {
            do {
                try await network.prepare()
                break
            } catch {
                logger.error("pod network cannot start; retrying", metadata: ["error": "\(error)", "retryIn": "\(pause)"])
                try? await Task.sleep(for: pause)
                pause = min(pause * 2, .seconds(60))
            }
        }
        let interval = network.settings.syncInterval
        var failing = false
        while !Task.isCancelled {
            do {
                let view = try await api.podNetwork(node: configuration.nodeName)
                await network.sync(view: view)
                if failing { logger.notice("pod network view from the api-server again") }
                failing = false
            } catch {
                if error.code == .cancelled { return }
                if !failing { logger.warning("cannot get the pod network view; keeping the last", metadata: ["error": "\(error)"]) }
                failing = true
            }
            try? await Task.sleep(for: interval)
        }
    }
}
