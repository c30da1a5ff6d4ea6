#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneSystem

/// Events the scheduler records, de-duplicated in memory.
///
/// A repeated event (a replica refused pass after pass) is one `Event` object whose `count`
/// and `lastSeen` grow; its first occurrence is written at the end of the pass, repeats at
/// most once per flush interval. One-shot events (a bind, a preemption) are one object each.
/// Writes go through the ``Committer``'s fenced transactions like every other write.
final class EventRecorder: Sendable {
    /// Reasons the scheduler records, as constants.
    enum Reason {
        /// No node would take a replica.
        static let failedScheduling = "FailedScheduling"
        /// A replica was bound.
        static let scheduled = "Scheduled"
        /// A replica was stopped to make room (see ``PreemptionPlan/preemptedReason``).
        static let preempted = PreemptionPlan.preemptedReason
        /// A replica made room by preempting others.
        static let preempting = PreemptionPlan.preemptingReason
        /// A replica lost its node or GPU and goes back to pending.
        static let rescheduled = "Rescheduled"
        /// A node's heartbeat expired.
        static let nodeNotReady = "NodeNotReady"
        /// A node's heartbeat came back.
        static let nodeReady = "NodeReady"
        /// A GPU was reported unhealthy.
        static let gpuUnhealthy = "GPUUnhealthy"
        /// A tenant went over its spending limit; its deployments were scaled to min_instances.
        static let spendingLimitReached = "SpendingLimitReached"
        /// A model server was started for the warm pool or stopped idle.
        static let modelServer = "ModelServer"
    }

    /// The source every event names.
    static let source = "gpuplane-scheduler"

    /// One thing that happened.
    struct Occurrence: Sendable {
        var involved: OwnerReference
        var tenant: String
        var severity: Event.Severity
        var reason: String
        var message: String
        /// Aggregated with earlier occurrences of the same object and reason.
        var aggregate: Bool
    }

    struct Key: Hashable, Sendable {
        var kind: ResourceKind
        var tenant: String
        var name: String
        var reason: String
        var unique: String
    }

    private struct Entry {
        var event: Event
        var dirty: Bool
        var lastWritten: Date?
        var aggregate: Bool
    }

    private let state = Locked([Key: Entry]())

    /// Records `occurrence` at `now`.
    func record(_ o: Occurrence, now: Date = Date()) {
        let unique = o.aggregate ? "" : String(UUID().uuidString.prefix(8)).lowercased()
        let key = Key(kind: o.involved.kind, tenant: o.tenant, name: o.involved.name, reason: o.reason, unique: unique)
        state.withLock { entries in
            if var entry = entries[key] {
                entry.event.spec.count += 1
                entry.event.spec.lastSeen = now
                entry.event.spec.message = o.message
                entry.event.spec.severity = o.severity
                entry.dirty = true
                entries[key] = entry
                return
            }
            var name = "\(o.involved.name).\(o.reason.lowercased())"
            if !unique.isEmpty { name += ".\(unique)" }
            let event = Event(
                metadata: ObjectMeta(name: name, tenant: o.tenant, labels: ["gpuplane.io/reason": o.reason]),
                spec: .init(
                    involved: o.involved, severity: o.severity, reason: o.reason, message: o.message,
                    source: Self.source, count: 1, firstSeen: now, lastSeen: now))
            entries[key] = Entry(event: event, dirty: true, lastWritten: nil, aggregate: o.aggregate)
        }
    }

    /// The writes due now: first occurrences, and repeats not written for `interval`. Entries
    /// not seen for `forgetAfter` (the events' time to live: etcd has deleted them or soon
    /// will) are dropped, so a later occurrence is created afresh.
    func due(now: Date, interval: TimeInterval, forgetAfter: TimeInterval = 3600) -> [(Key, WriteOp)] {
        state.withLock { entries in
            var writes: [(Key, WriteOp)] = []
            var stale: [Key] = []
            for (key, entry) in entries {
                if !entry.dirty {
                    if now.timeIntervalSince(entry.event.spec.lastSeen) > forgetAfter { stale.append(key) }
                    continue
                }
                if let last = entry.lastWritten, now.timeIntervalSince(last) < interval { continue }
                writes.append((key, entry.event.metadata.resourceVersion.isEmpty ? .create(entry.event) : .update(entry.event)))
            }
            for key in stale { entries.removeValue(forKey: key) }
            return writes
        }
    }

    /// The writes of `keys` committed at `revision`.
    func committed(_ keys: [Key], revision: Int64, now: Date = Date()) {
        state.withLock { entries in
            for key in keys {
                guard var entry = entries[key] else { continue }
                if !entry.aggregate {
                    entries.removeValue(forKey: key)
                    continue
                }
                entry.event.metadata.resourceVersion = String(revision)
                entry.dirty = false
                entry.lastWritten = now
                entries[key] = entry
            }
        }
    }

    /// What the store holds for `key` (after a failed write): adopt its version and count.
    func reconcile(_ key: Key, stored: Event?) {
        state.withLock { entries in
            guard var entry = entries[key] else { return }
            if let stored {
                if entry.event.metadata.resourceVersion.isEmpty {
                    entry.event.spec.count += stored.spec.count
                    entry.event.spec.firstSeen = stored.spec.firstSeen
                }
                entry.event.metadata.resourceVersion = stored.metadata.resourceVersion
                entry.event.metadata.uid = stored.metadata.uid
                entry.event.metadata.created = stored.metadata.created
            } else {
                entry.event.metadata.resourceVersion = ""
            }
            entries[key] = entry
        }
    }

    /// The event object of `key` as the recorder holds it.
    func event(_ key: Key) -> Event? { state.withLock { $0[key]?.event } }

    /// The object an event is about.
    static func reference<R: Resource>(_ object: R) -> OwnerReference {
        OwnerReference(kind: R.kind, name: object.metadata.name, uid: object.metadata.uid)
    }
}
