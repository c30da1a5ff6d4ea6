import EtcdClient
import Foundation
import GPUPlaneCore
import Logging
import GPUPlaneSystem

/// Which nodes have a live heartbeat key (`/gpuplane/heartbeats/<node>`): list, then watch,
/// listing again after compaction. The keys sit on leases the api-server renews; when a node
/// stops calling, etcd deletes its key and the watch says so.
final class HeartbeatWatcher: Sendable {
    private let client: Etcd.Client
    private let logger: Logger
    private let onChange: @Sendable () -> Void
    private let state = Locked(State())

    private struct State {
        var live: Set<String> = []
        /// Nodes whose key this watcher saw deleted (its lease expired) and not put again.
        var expired: Set<String> = []
        var synced = false
    }

    init(client: Etcd.Client, logger: Logger, onChange: @escaping @Sendable () -> Void) {
        self.client = client
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
                let listed = try await client.range(.prefix(NodeHeartbeat.prefix), keysOnly: true)
                let live = Set(listed.kvs.compactMap { NodeHeartbeat.node(fromKey: $0.keyString) })
                state.withLock {
                    // A key gone while no watch ran: the lifecycle's grace decides, not this.
                    $0.expired.subtract(live)
                    $0.live = live
                    $0.synced = true
                }
                onChange()
                failures = 0
                let watch = client.watch(.prefix(NodeHeartbeat.prefix), startRevision: listed.header.revision + 1)
                for try await batch in watch {
                    guard !batch.events.isEmpty else { continue }
                    state.withLock { s in
                        for event in batch.events {
                            guard let node = NodeHeartbeat.node(fromKey: event.kv.keyString) else { continue }
                            switch event.type {
                            case .put:
                                s.live.insert(node)
                                s.expired.remove(node)
                            case .delete:
                                s.live.remove(node)
                                s.expired.insert(node)
                            }
                        }
                    }
                    onChange()
                }
            } catch let e as EtcdError where e.code == .compacted {
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
