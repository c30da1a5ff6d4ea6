import EtcdClient
import Foundation
import GPUPlaneCore
import GPUPlaneManifest
import GPUPlaneStore
import Hummingbird

/// `/v1/applications`: apply (create or update by name, idempotent), list, get, delete, watch;
/// `/v1/validate`: the same checks as a dry run.
struct ApplicationRoutes: Sendable {
    let deps: APIDependencies
    var admission: Admission { Admission(deps: deps) }

    func register(_ routes: RouteTable) {
        routes.add(.post, "/v1/applications") { try await apply($0, $1) }
        routes.add(.get, "/v1/applications") { try await list($0, $1) }
        routes.add(.get, "/v1/applications/:name") { try await get($0, $1) }
        routes.add(.delete, "/v1/applications/:name") { try await delete($0, $1) }
        routes.add(.post, "/v1/validate") { try await validate($0, $1) }
    }

    /// Maps to `POST /v1/applications`: validates, admits and writes the Application and its
    /// Replicas in one transaction. 201 when created, 200 when updated or unchanged.
    func apply(_ request: Request, _ context: APIContext) async throws -> Response {
        let tenantName = try context.planTenant(request)
        let expectedVersion = try request.expectedVersion()
        let tenant = try await admission.tenant(tenantName)
        let data = try await HTTPJSON.body(request)
        let manifest = ManifestReader(context: deps.validationContext(for: tenant)).read(data, file: nil)
        guard manifest.isValid else { throw APIError.rejected(manifest.diagnostics) }
        let apps = manifest.objects.compactMap { object -> (String, ApplicationSpec)? in
            if case .application(let name, let spec) = object { return (name, spec) }
            return nil
        }
        guard apps.count == 1, manifest.objects.count == 1, let (name, spec) = apps.first else {
            throw APIError(
                .unprocessableContent, .invalid,
                manifest.objects.count > 1
                    ? "send one application per request (this body has \(manifest.objects.count) documents)"
                    : "this body is a deployment; send it to POST /v1/deployments")
        }
        return try await Admission.retryingRaces {
            try await admit(name: name, spec: spec, tenant: tenant, expectedVersion: expectedVersion)
        }
    }

    /// One admission of an apply: create-if-absent, or read, diff and update (read first at
    /// once for tenants whose applies are mostly re-applies, see ``ApplyHistory``). Throws
    /// ``Admission/Race`` when another GPU admission of the tenant, or another create of the
    /// same name, committed in between.
    private func admit(name: String, spec: ApplicationSpec, tenant: Tenant, expectedVersion: String?) async throws -> Response {
        let tenantName = tenant.metadata.name
        let history = deps.applyHistory
        let readFirst = expectedVersion == nil && history.readsFirst(tenant: tenantName)
        if expectedVersion == nil, !readFirst {
            if let created = try await createIfAbsent(name: name, spec: spec, tenant: tenant) {
                history.record(tenant: tenantName, existed: false)
                return try HTTPJSON.response(created, status: .created)
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
        } catch let error as StoreError {
            throw APIError.from(error, what: "application \(name)")
        }
        if readFirst { history.record(tenant: tenantName, existed: current != nil) }
        if let expected = expectedVersion, expected != (current?.metadata.resourceVersion ?? "0")
        {
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
            return try HTTPJSON.response(current)
        }
        try await admission.checkSpendingLimit(tenant: tenant, wantsGPU: wanted.contains { $0.spec.mode != nil })
        let stored: GPUPlaneCore.Application
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
            stored = try result.object(handle)
        } catch let error as StoreError {
            // What was read changed before the write: another apply of the same name created
            // the application or its replicas, a delete removed them, or the scheduler moved a
            // replica. Without a version asked for, an apply means "make it so": read it again
            // and decide again. With one, the caller asked for a compare-and-swap: 409.
            if expectedVersion == nil, [.alreadyExists, .notFound, .conflict].contains(error.code) { throw Admission.Race() }
            throw Admission.race(error) ?? APIError.from(error, what: "application \(name)")
        }
        return try HTTPJSON.response(withStatus(stored, wanted), status: current == nil ? .created : .ok)
    }

    /// The first apply of a name, in one round trip: the Application and its Replicas created
    /// together, on condition that none of them exists. Nil when something does (an update, or
    /// leftovers), so the caller reads and diffs instead.
    private func createIfAbsent(name: String, spec: ApplicationSpec, tenant: Tenant) async throws -> GPUPlaneCore.Application? {
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
            return withStatus(try result.object(handle), replicas)
        } catch let error as StoreError where error.code == .alreadyExists || error.code == .conflict {
            // Something of it exists, or existed when the transaction ran and was deleted
            // before its failure was read (a conflict naming nothing): read and decide.
            return nil
        } catch let error as StoreError {
            throw Admission.race(error) ?? APIError.from(error, what: "application \(name)")
        }
    }

    /// Maps to `GET /v1/applications` (and `?watch=true&resourceVersion=N`).
    func list(_ request: Request, _ context: APIContext) async throws -> Response {
        let tenant = try context.tenant(request)
        if request.wantsWatch {
            return try await WatchStreamer(deps: deps).response(GPUPlaneCore.Application.self, tenant: tenant, request: request)
        }
        do {
            let list = try await deps.store.list(GPUPlaneCore.Application.self, tenant: tenant)
            let replicas = try await admission.replicas(of: tenant)
            return try HTTPJSON.response(ListBody(items: list.items.map { withStatus($0, replicas) }, resourceVersion: String(list.revision)))
        } catch let error as StoreError {
            throw APIError.from(error, what: "applications")
        }
    }

    /// Maps to `GET /v1/applications/{name}`.
    func get(_ request: Request, _ context: APIContext) async throws -> Response {
        let tenant = try context.tenant(request)
        let name = try context.parameter("name")
        do {
            let app = try await deps.store.get(GPUPlaneCore.Application.self, tenant: tenant, name: name)
            return try HTTPJSON.response(withStatus(app, try await admission.replicas(of: tenant, namePrefix: ReplicaPlanner.replicaPrefix(application: name))))
        } catch let error as StoreError {
            throw APIError.from(error, what: "application \(name)")
        }
    }

    /// Maps to `DELETE /v1/applications/{name}` (`If-Match` or `?resourceVersion=` makes it
    /// conditional): the application and its replicas go in one transaction.
    func delete(_ request: Request, _ context: APIContext) async throws -> Response {
        let tenant = try context.tenant(request)
        let expectedVersion = try request.expectedVersion()
        let name = try context.parameter("name")
        let prefix = ReplicaPlanner.replicaPrefix(application: name)
        let replicaKeys = Etcd.KeyRange.prefix(Replica.storageKey(tenant: tenant, name: prefix))
        // An apply or the scheduler may change the replicas between the read and the write:
        // the write holds only if none of them changed since the read, and is tried again
        // (on a fresh read) when one did, so no replica is ever left behind.
        for attempt in 1...8 {
            let list: ResourceList<Replica>
            do {
                list = try await deps.store.list(Replica.self, tenant: tenant, namePrefix: prefix)
            } catch let error as StoreError {
                throw APIError.from(error, what: "replicas")
            }
            let replicas = list.items.filter { $0.spec.owner.kind == .application && $0.spec.owner.name == name }
            do {
                _ = try await deps.store.transaction { txn in
                    txn.delete(GPUPlaneCore.Application.self, tenant: tenant, name: name, expectedVersion: expectedVersion)
                    for replica in replicas {
                        txn.delete(Replica.self, tenant: tenant, name: replica.metadata.name, expectedVersion: replica.metadata.resourceVersion)
                    }
                    txn.require(
                        Etcd.Compare(replicaKeys, .less, .modRevision(list.revision + 1)),
                        reason: "the application's replicas changed while it was deleted")
                }
                return HTTPJSON.noContent()
            } catch let error as StoreError {
                let replicasMoved = error.kind == .replica || error.code == .preconditionFailed || (error.code == .conflict && error.kind == nil)
                if replicasMoved && attempt < 8 { continue }
                throw APIError.from(error, what: "application \(name)")
            }
        }
        throw APIError(.conflict, .conflict, "the replicas of application \(name) kept changing while it was deleted; retry")
    }

    /// Maps to `POST /v1/validate`: what `gpuplane validate` prints, for the caller's plan.
    func validate(_ request: Request, _ context: APIContext) async throws -> Response {
        let tenantName = try context.tenant(request)
        let tenant = try? await admission.tenant(tenantName)
        let data = try await HTTPJSON.body(request)
        guard data.contains(where: { !($0 == 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D) }) else {
            throw APIError(.badRequest, .badRequest, "the body is empty; send the manifest (YAML or JSON) to check")
        }
        let file = request.query("file") ?? "manifest"
        let manifest = ManifestReader(context: deps.validationContext(for: tenant)).read(data, file: file)
        return try HTTPJSON.response(ValidationBody(valid: manifest.isValid, diagnostics: manifest.diagnostics, lines: manifest.diagnostics.map(\.description)))
    }

    private func withStatus(_ app: GPUPlaneCore.Application, _ replicas: [Replica]) -> GPUPlaneCore.Application {
        var app = app
        let mine = replicas.filter { $0.spec.owner.kind == .application && $0.spec.owner.name == app.metadata.name }
        let running = mine.filter { $0.status.phase == .running }.count
        let waiting = mine.first { $0.status.phase == .pending && $0.status.message != nil }?.status.message
        app.status = ApplicationStatus(
            podsRunning: running, podsWanted: app.spec.pods.count,
            message: running < app.spec.pods.count ? waiting.map { "\(running)/\(app.spec.pods.count) running: \($0)" } : nil)
        return app
    }
}

/// A list answer: items and the revision to watch from.
struct ListBody<T: Encodable>: Encodable {
    var items: [T]
    var resourceVersion: String
}

/// A dry run's answer.
struct ValidationBody: Encodable {
    var valid: Bool
    var diagnostics: [Diagnostic]
    var lines: [String]
}
