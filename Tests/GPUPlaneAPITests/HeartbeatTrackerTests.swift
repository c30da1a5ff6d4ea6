import EtcdClient
import Foundation
import GPUPlaneCore
@testable import GPUPlaneStore
import GPUPlaneTestSupport
import Testing

@testable import GPUPlaneAPI

/// The api-server's heartbeat tracker on real etcd, two trackers standing for two api-servers,
/// their sweeps run by hand (neither started: no watch forgets a node for them).
@Suite struct HeartbeatTrackerTests {
    static func tracker(_ h: Harness, ttl: Int64 = 30) -> HeartbeatTracker {
        HeartbeatTracker(store: h.deps.store, ttl: ttl, silentAfter: .seconds(2), logger: h.deps.logger)
    }

    static func key(_ h: Harness, _ node: String) async throws -> (state: NodeHeartbeats.KeyState, lease: Int64)? {
        try await h.client.get(NodeHeartbeat.key(node)).map { (NodeHeartbeats.KeyState(value: $0.value), $0.lease) }
    }

    /// An api-server whose node moved to another never marks it silent: its compare on its
    /// own lease fails and it forgets the node. The api-server that holds the node does.
    @Test func onlyTheApiServerHoldingTheKeyMarksItSilent() async throws {
        let h = try await SharedServer.shared.get()
        let a = Self.tracker(h)
        let b = Self.tracker(h)
        defer {
            a.stop()
            b.stop()
        }
        let node = "hb-" + UUID().uuidString.prefix(8).lowercased()
        try await a.beat(node: node, registering: true)
        #expect(try await Self.key(h, node)?.state == .live(server: a.serverID))
        try await b.beat(node: node, registering: true)
        #expect(try await Self.key(h, node)?.state == .live(server: b.serverID))
        #expect(a.liveNodes.contains(node) && b.liveNodes.contains(node))

        await a.sweep(now: .now + .seconds(60))
        #expect(try await Self.key(h, node)?.state == .live(server: b.serverID), "a marked b's node silent")
        #expect(!a.liveNodes.contains(node), "a forgets a node it lost")

        await b.sweep(now: .now + .seconds(60))
        #expect(try await Self.key(h, node)?.state == .silent(server: b.serverID))
        #expect(!b.liveNodes.contains(node))
    }

    /// Time the api-server itself did not run (a sweep that woke late: the process stopped or
    /// starved, its nodes' beats waiting unread) is not the nodes' silence: the sweep after a
    /// 10 s pause marks none, and a node that stays quiet is marked once it has been quiet for
    /// `silentAfter` of the api-server's running time. A sweep a little late is no pause.
    @Test func theApiServersOwnPauseIsNotTheNodesSilence() async throws {
        let h = try await SharedServer.shared.get()
        let a = Self.tracker(h)  // silentAfter 2 s: pauses count past 2/3 s late
        defer { a.stop() }
        let node = "hb-" + UUID().uuidString.prefix(8).lowercased()
        // The tracker's clock, a minute ahead of the real one: a beat that writes sets its
        // last beat to the later of its `now` and its answer, and a slow write on a loaded
        // machine must not move it.
        let start = ContinuousClock.now + .seconds(60)
        try await a.beat(node: node, registering: true, now: start)
        // A sweep half a second late is not a pause.
        await a.sweep(now: start + .seconds(1), late: .milliseconds(500))
        #expect(a.pausedTotal == .zero)
        // Ten seconds without running: the node beat meanwhile, unread.
        await a.sweep(now: start + .seconds(11), late: .seconds(10))
        #expect(a.pausedTotal == .seconds(10))
        #expect(try await Self.key(h, node)?.state == .live(server: a.serverID), "marked silent for the api-server's own pause")
        #expect(a.liveNodes.contains(node))
        // 2 s of running time since its beat (not more than silentAfter), then 3.5 s: silent.
        await a.sweep(now: start + .seconds(12))
        #expect(try await Self.key(h, node)?.state == .live(server: a.serverID))
        await a.sweep(now: start + .seconds(13.5))
        #expect(try await Self.key(h, node)?.state == .silent(server: a.serverID))

        // A node that beats after a pause is judged from that beat alone.
        let other = "hb-" + UUID().uuidString.prefix(8).lowercased()
        try await a.beat(node: other, registering: true, now: start + .seconds(14))
        await a.sweep(now: start + .seconds(15), late: .seconds(30))
        await a.sweep(now: start + .seconds(16.5))
        #expect(try await Self.key(h, other)?.state == .live(server: a.serverID))
        await a.sweep(now: start + .seconds(17.5))
        #expect(try await Self.key(h, other)?.state == .live(server: a.serverID))
        try await a.beat(node: other, registering: true, now: start + .seconds(18))
        await a.sweep(now: start + .seconds(20.5))
        #expect(try await Self.key(h, other)?.state == .silent(server: a.serverID), "a pause before its last beat shields it")
    }

    /// A node is judged silent only past `silentAfter` plus how late this api-server has lately
    /// read beats (at most `silentAfter` more): a burst that keeps beats waiting on the host
    /// (thousands of nodes moving here) must not turn the nodes whose beats wait into silent
    /// ones. A node that stays quiet is still marked, that much later, and the allowance goes
    /// once reads are on time again.
    @Test func beatsReadLateAreNotTheNodesSilence() async throws {
        let h = try await SharedServer.shared.get()
        let a = Self.tracker(h)  // silentAfter 2 s
        defer { a.stop() }
        func name() -> String { "hb-" + UUID().uuidString.prefix(8).lowercased() }
        let (quiet, late, recovered, capped, slow) = (name(), name(), name(), name(), name())
        // A clock a minute ahead of the real one (a write sets a beat's time to its answer).
        let start = ContinuousClock.now + .seconds(60)
        try await a.beat(node: quiet, registering: true, now: start)
        try await a.beat(node: late, registering: true, now: start)
        // `late`'s beat reached the host at 1 s and was read at 2.5 s: beats wait 1.5 s.
        // (Beats here register: these nodes have no Node object for a rewrite to find.)
        try await a.beat(node: late, registering: true, arrived: start + .seconds(1), now: start + .seconds(2.5))
        // `quiet` has been quiet 3 s: past silentAfter, but not past it plus the reads' lag.
        await a.sweep(now: start + .seconds(3))
        #expect(try await Self.key(h, quiet)?.state == .live(server: a.serverID), "marked silent while beats were read 1.5 s late")
        await a.sweep(now: start + .seconds(3.7))
        #expect(try await Self.key(h, quiet)?.state == .silent(server: a.serverID), "quiet 3.7 s, allowed 3.5 s")
        #expect(try await Self.key(h, late)?.state == .live(server: a.serverID))
        // Reads on time for two windows: the allowance is gone.
        try await a.beat(node: recovered, registering: true, now: start + .seconds(4.6))
        await a.sweep(now: start + .seconds(7.2))
        #expect(try await Self.key(h, recovered)?.state == .silent(server: a.serverID), "quiet 2.6 s with beats read on time")
        // However late the reads, a node is marked once quiet past twice silentAfter.
        try await a.beat(node: capped, registering: true, now: start + .seconds(8))
        try await a.beat(node: slow, registering: true, now: start + .seconds(8))
        try await a.beat(node: slow, registering: true, arrived: start + .seconds(8.1), now: start + .seconds(11.1))
        await a.sweep(now: start + .seconds(11.5))
        #expect(try await Self.key(h, capped)?.state == .live(server: a.serverID), "quiet 3.5 s, allowed 4 s")
        await a.sweep(now: start + .seconds(12.2))
        #expect(try await Self.key(h, capped)?.state == .silent(server: a.serverID), "beats read 3 s late allow 2 s more, not 3")
    }

    /// A draining tracker (its api-server shutting down) marks no node silent: the key stays
    /// live under its lease for the node's next api-server to take.
    @Test func aDrainingTrackerMarksNoNodeSilent() async throws {
        let h = try await SharedServer.shared.get()
        let a = Self.tracker(h)
        defer { a.stop() }
        let node = "hb-" + UUID().uuidString.prefix(8).lowercased()
        try await a.beat(node: node, registering: true)
        a.drain()
        await a.sweep(now: .now + .seconds(60))
        #expect(try await Self.key(h, node)?.state == .live(server: a.serverID))
        #expect(a.liveNodes.contains(node))
    }

    /// Beats after the first touch memory only; a node that is not registered gets notFound
    /// and no key; a silent node's beat writes it live again.
    @Test func beatsWriteOnlyWhatChanges() async throws {
        let h = try await SharedServer.shared.get()
        let a = Self.tracker(h)
        defer { a.stop() }
        let ghost = "hb-" + UUID().uuidString.prefix(8).lowercased()
        await #expect { try await a.beat(node: ghost, registering: false) } throws: { ($0 as? StoreError)?.code == .notFound }
        #expect(try await Self.key(h, ghost) == nil)
        #expect(!a.liveNodes.contains(ghost))

        let node = "hb-" + UUID().uuidString.prefix(8).lowercased()
        _ = try await h.deps.store.create(Node(metadata: ObjectMeta(name: node), spec: NodeSpec(machineType: "cpu", gpus: [])))
        // A beat every 100 ms on the tracker's clock (a loaded run's real gaps could pass the
        // gap after which a beat writes again, rightly).
        // The tracker's clock, a minute ahead of the real one: a beat that writes sets its
        // last beat to the later of its `now` and its answer, and a slow write on a loaded
        // machine must not move it.
        let start = ContinuousClock.now + .seconds(60)
        try await a.beat(node: node, registering: false, now: start)
        let written = try #require(try await h.client.get(NodeHeartbeat.key(node)))
        for i in 1...5 { try await a.beat(node: node, registering: false, now: start + .milliseconds(100 * i)) }
        #expect(try await h.client.get(NodeHeartbeat.key(node))?.modRevision == written.modRevision, "a steady beat wrote")

        await a.sweep(now: start + .seconds(60))
        #expect(try await Self.key(h, node)?.state == .silent(server: a.serverID))
        try await a.beat(node: node, registering: false)
        #expect(try await Self.key(h, node)?.state == .live(server: a.serverID))
        _ = try await h.deps.store.delete(Node.self, tenant: ObjectMeta.clusterTenant, name: node)
    }

    /// A node that beat to b meanwhile and comes back to a after a gap: a writes its key again,
    /// though a's watch never said the key moved (an overloaded pair passing nodes back and
    /// forth), so b, whose key it was, cannot mark silent a node that beats to a. A beat within
    /// the gap touches memory only.
    @Test func aBeatAfterAGapTakesTheKeyBack() async throws {
        let h = try await SharedServer.shared.get()
        let a = Self.tracker(h)
        let b = Self.tracker(h)
        defer {
            a.stop()
            b.stop()
        }
        let node = "hb-" + UUID().uuidString.prefix(8).lowercased()
        _ = try await h.deps.store.create(Node(metadata: ObjectMeta(name: node), spec: NodeSpec(machineType: "cpu", gpus: [])))
        // The tracker's clock, a minute ahead of the real one: a beat that writes sets its
        // last beat to the later of its `now` and its answer, and a slow write on a loaded
        // machine must not move it.
        let start = ContinuousClock.now + .seconds(60)
        try await a.beat(node: node, registering: false, now: start)
        try await b.beat(node: node, registering: false, now: start + .milliseconds(500))
        #expect(try await Self.key(h, node)?.state == .live(server: b.serverID))
        // Within the gap (1.33 s: two thirds of silent-after): memory only, the key stays b's.
        try await a.beat(node: node, registering: false, now: start + .milliseconds(900))
        #expect(try await Self.key(h, node)?.state == .live(server: b.serverID))
        // After it: a writes the key under its own lease again.
        try await a.beat(node: node, registering: false, now: start + .milliseconds(2500))
        #expect(try await Self.key(h, node)?.state == .live(server: a.serverID))
        await b.sweep(now: start + .seconds(60))
        #expect(try await Self.key(h, node)?.state == .live(server: a.serverID), "b marked silent a node that beats to a")
        _ = try await h.deps.store.delete(Node.self, tenant: ObjectMeta.clusterTenant, name: node)
    }

    /// Many nodes' keys written at once — 200 first beats, then the sweep that finds all 200
    /// silent — go through the keys' group commit: every key lands as it would alone, in far
    /// fewer etcd requests than keys (one request a key before, the sweep's one after
    /// another).
    @Test func keysWrittenTogetherShareRequests() async throws {
        let h = try await SharedServer.shared.get()
        // A client of its own: its transfers are this tracker's etcd requests alone.
        let client = try Etcd.Client(h.client.configuration)
        let a = HeartbeatTracker(store: ResourceStore(client: client), ttl: 30, silentAfter: .seconds(2), logger: h.deps.logger)
        defer { a.stop() }
        let batcher = try #require(a.heartbeats.batcher)
        let before = client.transportStatistics.transfers
        let prefix = "hbb-" + UUID().uuidString.prefix(6).lowercased()
        let nodes = (0..<200).map { "\(prefix)-\($0)" }
        for node in nodes {
            _ = try await h.deps.store.create(Node(metadata: ObjectMeta(name: node), spec: NodeSpec(machineType: "cpu", gpus: [])))
        }
        // The tracker's clock, a minute ahead of the real one: a beat that writes sets its
        // last beat to the later of its `now` and its answer, and a slow write on a loaded
        // machine must not move it.
        let start = ContinuousClock.now + .seconds(60)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for node in nodes { group.addTask { try await a.beat(node: node, registering: false, now: start) } }
            try await group.waitForAll()
        }
        for node in nodes { #expect(try await Self.key(h, node)?.state == .live(server: a.serverID), "\(node)") }
        #expect(a.liveNodes.isSuperset(of: nodes))
        // The lease's grant and renewals, and batches of up to 64 keys.
        let beatRequests = client.transportStatistics.transfers - before
        #expect(beatRequests <= 100, "200 first beats took \(beatRequests) etcd requests: \(batcher.statistics)")

        await a.sweep(now: start + .seconds(60))
        for node in nodes { #expect(try await Self.key(h, node)?.state == .silent(server: a.serverID), "\(node)") }
        let sweepRequests = client.transportStatistics.transfers - before - beatRequests
        #expect(sweepRequests <= 100, "marking 200 nodes silent took \(sweepRequests) etcd requests: \(batcher.statistics)")
        for node in nodes { _ = try await h.deps.store.delete(Node.self, tenant: ObjectMeta.clusterTenant, name: node) }
    }

    /// A silent mark waits its turn behind other keys' writes; asked as it leaves whether it
    /// is still wanted (the sweep asks whether the node beat meanwhile), a mark that is not is
    /// never sent: the key stays as it was, and the scheduler never sees the node silent. One
    /// still wanted is written.
    @Test func aSilentMarkNoLongerWantedIsNeverWritten() async throws {
        let h = try await SharedServer.shared.get()
        let a = Self.tracker(h)
        defer { a.stop() }
        let node = "hb-" + UUID().uuidString.prefix(8).lowercased()
        _ = try await h.deps.store.create(Node(metadata: ObjectMeta(name: node), spec: NodeSpec(machineType: "cpu", gpus: [])))
        try await a.beat(node: node, registering: true)
        let before = try #require(try await h.client.get(NodeHeartbeat.key(node)))
        await #expect(throws: NodeHeartbeats.MarkWithdrawn.self) {
            _ = try await a.heartbeats.markSilent(node: node, server: a.serverID, lease: before.lease, wanted: { false })
        }
        #expect(try await h.client.get(NodeHeartbeat.key(node))?.modRevision == before.modRevision, "a withdrawn mark wrote")
        #expect(try await a.heartbeats.markSilent(node: node, server: a.serverID, lease: before.lease, wanted: { true }) != nil)
        #expect(try await Self.key(h, node)?.state == .silent(server: a.serverID))
        _ = try await h.deps.store.delete(Node.self, tenant: ObjectMeta.clusterTenant, name: node)
    }

    /// A lost lease (revoked here; expired in an etcd outage in life) is replaced at once: the
    /// keys of the nodes written under it are written again under a new lease without waiting
    /// for a beat; a node deleted meanwhile is not written, and is forgotten.
    @Test func aLostLeaseIsReplaced() async throws {
        let h = try await SharedServer.shared.get()
        let a = Self.tracker(h, ttl: 3)
        defer { a.stop() }
        let node = "hb-" + UUID().uuidString.prefix(8).lowercased()
        let gone = "hb-" + UUID().uuidString.prefix(8).lowercased()
        for name in [node, gone] {
            _ = try await h.deps.store.create(Node(metadata: ObjectMeta(name: name), spec: NodeSpec(machineType: "cpu", gpus: [])))
            try await a.beat(node: name, registering: false)
        }
        let first = try #require(try await Self.key(h, node)).lease
        _ = try await h.deps.store.delete(Node.self, tenant: ObjectMeta.clusterTenant, name: gone)
        try await h.client.revokeLease(first)
        #expect(try await Self.key(h, node) == nil, "the key went with the lease")
        try await eventually("the key written again under a new lease", timeout: 30) {
            guard let key = try await Self.key(h, node) else { return false }
            return key.state == .live(server: a.serverID) && key.lease != first
        }
        try await eventually("the deleted node forgotten: its beat is notFound", timeout: 30) {
            do {
                try await a.beat(node: gone, registering: false)
                return false
            } catch let error as StoreError where error.code == .notFound {
                return true
            }
        }
        #expect(try await Self.key(h, gone) == nil)
        _ = try await h.deps.store.delete(Node.self, tenant: ObjectMeta.clusterTenant, name: node)
    }
}
