#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import GPUPlaneStore
import Logging
import GPUPlaneSystem

/// Which nodes beat, from their heartbeat keys (``NodeHeartbeats``): list, then watch, listing
/// again after compaction. An api-server writes a node's key `live` when the node beats to it
/// and `silent` when it stopped; the key of an api-server that died vanishes with its lease
/// until the node beats to another. So: a `live` key (or a value that is not an api-server's,
/// as tests write) is live; a `silent` key is a node seen to stop (expired); a key that vanished
/// is neither, and ``NodeLifecycle`` gives its node the grace to beat elsewhere, except a key
/// of a test's own value, whose deletion is its lease's expiry.
final class HeartbeatWatcher: Sendable {
    private let heartbeats: NodeHeartbeats
    private let logger: Logger
    private let onChange: @Sendable () -> Void
    private let state = Locked(State())

    private struct State {
        var live: Set<String> = []
        /// Nodes whose key says silent, or whose key of a test's own value was seen deleted
        /// (its lease expired), and not live again.
        var expired: Set<String> = []
        var synced = false
    }

    init(heartbeats: NodeHeartbeats, logger: Logger, onChange: @escaping @Sendable () -> Void) {
        self.heartbeats = heartbeats
        self.logger = logger
        self.onChange = onChange
    }

    /// Nodes whose heartbeat key says live.
    var liveNodes: Set<String> { state.withLock { $0.live } }

    /// What is known of the nodes' heartbeats at one moment.
    struct Liveness: Sendable {
        /// Nodes whose heartbeat key says live.
        var live: Set<String>
        /// Nodes seen to stop beating: their key says silent (or, for a key of a test's own
        /// value, was seen to expire), not merely missing.
        var expired: Set<String>
    }

    /// The live and expired nodes, read together.
    var liveness: Liveness { state.withLock { Liveness(live: $0.live, expired: $0.expired) } }

    /// Whether the first list is in.
    var hasSynced: Bool { state.withLock { $0.synced } }

    /// Which of `nodes` etcd shows, now, without a live heartbeat key (absent, or saying
    /// silent): a read, not the watch, so a key the watch has not delivered yet still counts.
    func confirmSilent(_ nodes: Set<String>) async throws -> Set<String> {
        let keys = try await heartbeats.states(of: nodes)
        return nodes.filter { node in
            if case .live = keys[node] { return false }
            return true
        }
    }

    /// Lists and watches until cancelled.
    func run() async {
        var failures = 0
        while !Task.isCancelled {
            do {
                let (keys, revision) = try await heartbeats.list()
                state.withLock { s in
                    // A key gone while no watch ran: the lifecycle's grace decides, not this.
                    s.live = []
                    for (node, key) in keys {
                        if case .silent = key {
                            s.expired.insert(node)
                        } else {
                            s.live.insert(node)
                            s.expired.remove(node)
                        }
                    }
                    s.synced = true
                }
                onChange()
                failures = 0
                for try await changes in heartbeats.watch(from: revision + 1) {
                    guard !changes.isEmpty else { continue }
                    state.withLock { s in
                        for change in changes {
                            switch change.state {
                            case .live:
                                s.live.insert(change.node)
                                s.expired.remove(change.node)
                            case .silent, .deleted(expired: true):
                                s.live.remove(change.node)
                                s.expired.insert(change.node)
                            case .deleted(expired: false):
                                // Its api-server's lease went (or the node): the grace decides.
                                s.live.remove(change.node)
                            }
                        }
                    }
                    onChange()
                }
            } catch let e as StoreError where e.code == .compacted {
                continue
            } catch {
                if Task.isCancelled { return }
                failures += 1
                logger.warning("heartbeat watch failed; listing again", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: ResourceStore.relistPause(afterFailures: failures))
            }
        }
    }
}
