#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import GPUPlaneStore

/// One write of the leader: committed only inside a fenced transaction.
enum WriteOp: Sendable {
    /// Create; fails the transaction when the object exists.
    case create(any Resource)
    /// Replace, if still at the object's resourceVersion.
    case update(any Resource)
    /// Delete, if still at the object's resourceVersion.
    case delete(any Resource)

    var object: any Resource {
        switch self {
        case .create(let o), .update(let o), .delete(let o): return o
        }
    }

    var kind: ResourceKind { type(of: object).kind }
}

/// Writes that must commit together (a preemption and its preemptor's binding; a node and
/// the replicas it loses), and the events to record once they did. What every step of the
/// pass returns; the ``Committer`` commits them.
struct WriteUnit: Sendable {
    var ops: [WriteOp]
    var events: [EventRecorder.Occurrence] = []
    /// Events recorded when the unit is handed to the committer, whether or not anything
    /// commits (a replica refused, a GPU unhealthy). A unit of notes alone writes nothing.
    var notes: [EventRecorder.Occurrence] = []
    /// Bindings in the unit (for counters).
    var bindings: [Binding] = []
    /// Keys the transaction bumps, each on condition that it was not written after the
    /// revision a decision read at (``StoreTransaction/bump(_:unchangedSince:reason:)``): the
    /// tenants' GPU admission keys, for writes that add whole GPUs.
    var guards: [Guard] = []

    /// One guarded key.
    struct Guard: Sendable, Hashable {
        var key: String
        var revision: Int64
    }

    /// A unit that only records `occurrence`.
    static func note(_ occurrence: EventRecorder.Occurrence) -> WriteUnit { WriteUnit(ops: [], notes: [occurrence]) }

    /// Whether the unit has nothing to commit, only notes.
    var isNotesOnly: Bool { ops.isEmpty && events.isEmpty && guards.isEmpty && bindings.isEmpty }
}

extension StoreTransaction {
    /// Adds `op`; creates and updates go under `lease` (0: none).
    mutating func add(_ op: WriteOp, lease: Int64 = 0) throws {
        switch op {
        case .create(let o): try addCreate(o, lease: lease)
        case .update(let o): try addUpdate(o, lease: lease)
        case .delete(let o): addDelete(o)
        }
    }

    private mutating func addCreate<R: Resource>(_ object: R, lease: Int64) throws { try create(object, lease: lease) }
    private mutating func addUpdate<R: Resource>(_ object: R, lease: Int64) throws { try update(object, lease: lease) }
    private mutating func addDelete<R: Resource>(_ object: R) {
        delete(R.self, tenant: object.metadata.tenant, name: object.metadata.name,
               expectedVersion: object.metadata.resourceVersion)
    }
}
