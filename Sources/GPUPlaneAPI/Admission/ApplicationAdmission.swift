import GPUPlaneCore
import GPUPlaneStore

extension StoreTransaction.ConditionTag {
    /// An application's delete: none of its replicas changed since they were read.
    static let applicationReplicas = Self("api.application-replicas")
}

/// Applies and deletes of applications: an application and its replicas are admitted (plan,
/// GPU limit, spending limit) and written together, in one transaction, or not at all.
struct ApplicationAdmission: Sendable {
    let deps: APIDependencies
    var admission: Admission { Admission(deps: deps) }

    /// What an apply did.
    enum Outcome {
        /// Created (`created`) or updated: the application as stored, and its replicas as
        /// wanted (for its status).
        case written(GPUPlaneCore.Application, replicas: [Replica], created: Bool)
        /// Nothing changed: the application as stored.
        case unchanged(GPUPlaneCore.Application)
    }

    /// Creates or updates application `name` of `tenant` with `spec`, with its replicas; with
    /// `expectedVersion`, only if the application is at that version ("0": does not exist).
    ///
    /// Without a version, an apply means "make it so": when another apply, a delete or the
    /// scheduler changes what it read before it writes, it reads and decides again.
    /// - Throws: 403 over a limit, 409 when the version is not the application's.
    func apply(name: String, spec: ApplicationSpec, tenant: Tenant, expectedVersion: String?) async throws -> Outcome {
        try await admission.inTurn(tenant.metadata.name) {
            try await admit(name: name, spec: spec, tenant: tenant, expectedVersion: expectedVersion)
        }
    }

    /// One admission of an apply: create-if-absent, or read, diff and update (read first at
    /// once for tenants whose applies are mostly re-applies, see ``ApplyHistory``). Throws
    /// ``Admission/Race`` when another GPU admission of the tenant, or another create of the
    /// same name, committed in between.
    private func admit(name: String, spec: ApplicationSpec, tenant: Tenant, expectedVersion: String?) async throws -> Outcome {
        let tenantName = tenant.metadata.name
        let history = deps.applyHistory
        let readFirst = expectedVersion == nil && history.readsFirst(tenant: tenantName)
        if expectedVersion == nil, !readFirst {
            if let created = try await createIfAbsent(name: name, spec: spec, tenant: tenant) {
                history.record(tenant: tenantName, existed: false)
                return created
            }
            history.record(tenant: tenantName, existed: true)
        }
        // It exists (or a version was asked for): read the application and its replicas at
        // once (independent reads), then update what changed.
        async let ownReplicas = admission.replicas(of: tenantName, namePrefix: ReplicaPlanner.replicaPrefix(application: name))
        let current: GPUPlaneCore.Application?
        do {
            current = try await deps.store.get(GPUPlaneCore.Application.self, tenant: tenantName, name: name)
        } catch let error as StoreError where error.code == .notFound {
            current = nil
        }
        if readFirst { history.record(tenant: tenantName, existed: current != nil) }
        if let expected = expectedVersion, expected != (current?.metadata.resourceVersion ?? "0") {
            throw APIError(
                .conflict, .conflict,
                "application \(name) is at resourceVersion \(current?.metadata.resourceVersion ?? "none"), not \(expected); read it again and retry")
        }
        var app = current ?? GPUPlaneCore.Application(metadata: ObjectMeta(name: name, tenant: tenantName, uid: ObjectMeta.newUID()), spec: spec)
        app.spec = spec
        let owner = OwnerReference(kind: .application, name: name, uid: app.metadata.uid)
        let wanted = try await deps.inferenceKeys.stamp(deps.planner.replicas(for: app))
        let decision = try await admission.checkGPULimit(
            tenant: tenant, replacing: owner, adding: ReplicaPlanner.wholeGPUs(wanted), field: "application.pods")
        let old = try await ownReplicas.filter { $0.spec.owner.kind == .application && $0.spec.owner.name == name }
        let oldByName = Dictionary(old.map { ($0.metadata.name, $0) }, uniquingKeysWith: { a, _ in a })
        let changedReplicas = wanted.filter { oldByName[$0.metadata.name]?.spec != $0.spec }
        let removed = old.filter { r in !wanted.contains { $0.metadata.name == r.metadata.name } }
        if let current, current.spec == spec, changedReplicas.isEmpty, removed.isEmpty {
            return .unchanged(current)
        }
        try await admission.checkSpendingLimit(tenant: tenant, wantsGPU: wanted.contains { $0.spec.mode != nil })
        do {
            let (handle, result) = try await deps.store.transaction { txn -> StoreTransaction.Handle<GPUPlaneCore.Application> in
                Admission.guardDecision(decision, in: &txn)
                let handle = current == nil ? try txn.create(app) : try txn.update(app)
                for replica in changedReplicas {
                    if var previous = oldByName[replica.metadata.name] {
                        previous.spec = replica.spec
                        previous.binding = nil
                        previous.status = ReplicaStatus()
                        try txn.update(previous)
                    } else {
                        try txn.create(replica)
                    }
                }
                for replica in removed {
                    txn.delete(Replica.self, tenant: tenantName, name: replica.metadata.name, expectedVersion: replica.metadata.resourceVersion)
                }
                return handle
            }
            return .written(try result.object(handle), replicas: wanted, created: current == nil)
        } catch let error as StoreError {
            // What was read changed before the write: another apply of the same name created
            // the application or its replicas, a delete removed them, or the scheduler moved a
            // replica. Without a version asked for, an apply means "make it so": read it again
            // and decide again. With one, the caller asked for a compare-and-swap: 409.
            if expectedVersion == nil, [.alreadyExists, .notFound, .conflict].contains(error.code) { throw Admission.Race() }
            throw Admission.race(error)
        }
    }

    /// The first apply of a name, in one round trip: the Application and its Replicas created
    /// together, on condition that none of them exists. Nil when something does (an update, or
    /// leftovers), so the caller reads and diffs instead.
    private func createIfAbsent(name: String, spec: ApplicationSpec, tenant: Tenant) async throws -> Outcome? {
        let app = GPUPlaneCore.Application(
            metadata: ObjectMeta(name: name, tenant: tenant.metadata.name, uid: ObjectMeta.newUID()), spec: spec)
        let replicas = try await deps.inferenceKeys.stamp(deps.planner.replicas(for: app))
        let decision = try await admission.checkGPULimit(
            tenant: tenant, replacing: OwnerReference(kind: .application, name: name, uid: app.metadata.uid),
            adding: ReplicaPlanner.wholeGPUs(replicas), field: "application.pods")
        // Over the spending limit, an unchanged re-apply must still answer 200: let the read
        // path decide.
        do {
            try await admission.checkSpendingLimit(tenant: tenant, wantsGPU: replicas.contains { $0.spec.mode != nil })
        } catch {
            return nil
        }
        do {
            let (handle, result) = try await deps.store.transaction { txn -> StoreTransaction.Handle<GPUPlaneCore.Application> in
                Admission.guardDecision(decision, in: &txn)
                let handle = try txn.create(app)
                for replica in replicas { try txn.create(replica) }
                return handle
            }
            return .written(try result.object(handle), replicas: replicas, created: true)
        } catch let error as StoreError where error.code == .alreadyExists || error.code == .conflict {
            // Something of it exists, or existed when the transaction ran and was deleted
            // before its failure was read (a conflict naming nothing): read and decide.
            return nil
        } catch let error as StoreError {
            throw Admission.race(error)
        }
    }

    /// Deletes application `name` of `tenant` (only at `expectedVersion` when given) and its
    /// replicas, in one transaction. An apply or the scheduler may change the replicas between
    /// the read and the write: the write holds only if none of them changed since the read,
    /// and is tried again (on a fresh read) when one did, so no replica is ever left behind.
    /// - Throws: 409 when the replicas kept changing.
    func delete(name: String, tenant: String, expectedVersion: String?) async throws {
        let prefix = ReplicaPlanner.replicaPrefix(application: name)
        let attempts = 8
        for attempt in 1...attempts {
            let list = try await deps.store.list(Replica.self, tenant: tenant, namePrefix: prefix)
            let replicas = list.items.filter { $0.spec.owner.kind == .application && $0.spec.owner.name == name }
            do {
                _ = try await deps.store.transaction { txn in
                    txn.delete(GPUPlaneCore.Application.self, tenant: tenant, name: name, expectedVersion: expectedVersion)
                    for replica in replicas {
                        txn.delete(Replica.self, tenant: tenant, name: replica.metadata.name, expectedVersion: replica.metadata.resourceVersion)
                    }
                    txn.requireUnchanged(
                        under: Replica.storageKey(tenant: tenant, name: prefix), since: list.revision,
                        reason: "the application's replicas changed while it was deleted", tag: .applicationReplicas)
                }
                return
            } catch let error as StoreError {
                let replicasMoved = error.kind == .replica || error.failedConditionTag == .applicationReplicas
                    || (error.code == .conflict && error.kind == nil)
                guard replicasMoved else { throw error }
                if attempt < attempts { continue }
            }
        }
        throw APIError(.conflict, .conflict, "the replicas of application \(name) kept changing while it was deleted; retry")
    }
}
