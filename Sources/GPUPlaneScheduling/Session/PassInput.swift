#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore

/// What one pass decides on: the informers' caches and the heartbeats, read once at the start
/// of the pass, and the clocks. Every step of ``LeaderSession/pass()`` is a function of this
/// (and of what the step keeps from earlier passes), so each can be tested on plain lists.
struct PassInput: Sendable {
    var nodes: [Node] = []
    var replicas: [Replica] = []
    var servers: [ModelServer] = []
    var deployments: [Deployment] = []
    var tenants: [Tenant] = []
    /// Which nodes have a heartbeat key, and which were seen to lose it.
    var liveness = HeartbeatWatcher.Liveness(live: [], expired: [])
    /// The replica informer's revision, read before its list: `replicas` reflect at least
    /// this revision, so a guard compared on it never misses a write the decision did not see.
    var replicaRevision: Int64 = 0
    /// Wall-clock time: events, usage intervals, the age of objects.
    var now = Date()
    /// This process's monotonic clock: graces and delays.
    var clock = ContinuousClock.now
}
