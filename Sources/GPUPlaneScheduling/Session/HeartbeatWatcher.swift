import Foundation
import GPUPlaneCore
import GPUPlaneStore
import Logging
import GPUPlaneSystem

/// Which nodes have a live heartbeat key (``NodeHeartbeats``): list, then watch, listing again
/// after compaction. The keys sit on leases the api-server renews; when a node
/// stops calling, etcd deletes its key and the watch says so.
final class HeartbeatWatcher: Sendable {
    private let heartbeats: NodeHeartbeats
    private let logger: Logger
    private let onChange: @Sendable () -> Void
    private let state = Locked(State())

    private struct State {
        var live: Set<String> = []
        /// Nodes whose key this watcher saw deleted (its lease expired) and not put again.
        var expired: Set<String> = []
        var synced = false
    }

    init(heartbeats: NodeHeartbeats, logger: Logger, onChange: @escaping @Sendable () -> Void) {
        self.heartbeats = heartbeats
        self.logger = logger
        self.onChange = onChange
    }

    /// Nodes whose heartbeat key exists.
    var liveNodes: Set<String> { state.withLock { $0.live } }

    /// What is known of the nodes' heartbeats at one moment.
    struct Liveness: Sendable {
        /// Nodes whose heartbeat key exists.
        var live: Set<String>
        /// Nodes whose key was seen to go (its lease expired, or it was deleted): silent for
        /// a whole lease, not merely not yet seen.
        var expired: Set<String>
    }

    /// The live and expired nodes, read together.
    var liveness: Liveness { state.withLock { Liveness(live: $0.live, expired: $0.expired) } }

    /// Whether the first list is in.
    var hasSynced: Bool { state.withLock { $0.synced } }

    /// Lists and watches until cancelled.
    func run() async {
        var failures = 0
        while !Task.isCancelled {
            do {
                let (live, revision) = try await heartbeats.list()
                state.withLock {
                    // A key gone while no watch ran: the lifecycle's grace decides, not this.
                    $0.expired.subtract(live)
                    $0.live = live
                    $0.synced = true
                }
                onChange()
                failures = 0
                for try await changes in heartbeats.watch(from: revision + 1) {
                    guard !changes.isEmpty else { continue }
                    state.withLock { s in
                        for change in changes {
                            if change.live {
                                s.live.insert(change.node)
                                s.expired.remove(change.node)
                            } else {
                                s.live.remove(change.node)
                                s.expired.insert(change.node)
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
                try? await Task.sleep(for: .milliseconds(min(2000, 50 << min(failures, 6))))
            }
        }
    }
}
