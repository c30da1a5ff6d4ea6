import CurlHTTP
import Foundation
import GPUPlaneCore
import Hummingbird

/// Deployments behind the gateway: `POST /v1/openai/<path>` with a tenant's token and
/// `"model": "<owner>/<model_name>"`, as DeepInfra's OpenAI-compatible API takes it.
extension InferenceGateway {
    /// One ready instance of a deployment.
    struct Instance {
        var name: String
        var endpoint: String
    }

    /// Forwards a request for one of `tenant`'s deployments (admins: anyone's) to a ready
    /// instance, waiting for a free slot when every instance has `max_batch_size` in flight.
    func forwardDeployment(_ request: Request, caller: Principal, rest: String) async throws -> Response {
        do {
            let response = try await routeDeployment(request, caller: caller, rest: rest)
            GatewayMetrics.requests(.forwarded).increment()
            return response
        } catch let error as APIError {
            GatewayMetrics.requests(GatewayMetrics.Outcome(error)).increment()
            throw error
        }
    }

    private func routeDeployment(_ request: Request, caller: Principal, rest: String) async throws -> Response {
        guard caller.role == .user || caller.role == .admin else {
            throw APIError(.forbidden, .forbidden, "a \(caller.role.rawValue) token can't call models")
        }
        let body = try await Self.body(request)
        let model: String
        switch ModelField.scan(Array(body)) {
        case .notAnObject:
            throw APIError(.badRequest, .badRequest, "the body must be a JSON object (an OpenAI-protocol request)")
        case .found(let location) where location.string?.isEmpty == false:
            model = location.string ?? ""
        case .found, .absent:
            throw APIError(
                .badRequest, .badRequest, "'model' is required: the deployment's full name, <owner>/<model_name>", field: "model")
        }
        let deployment = try await self.deployment(named: model, caller: caller)
        let key = "\(deployment.metadata.tenant)/\(deployment.metadata.name)"
        let instances = readyInstances(of: deployment)
        guard !instances.isEmpty else {
            admission.recordCold(key)
            let names = attachments.withLock { $0.byDeployment[key] } ?? []
            let running = names.filter { replicas.get(tenant: deployment.metadata.tenant, name: $0)?.status.phase == .running }.count
            var error = APIError(
                .serviceUnavailable, .unavailable,
                "deployment \(model) has no ready instance (\(running) running of \(names.count) wanted, min_instances \(deployment.spec.settings.minInstances)); retry shortly: the autoscaler starts one when max_instances allows")
            error.retryAfter = 5
            throw error
        }
        let byName = Dictionary(instances.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        // An instance that cannot even be connected to is left out and the request tried on
        // another; one that took the request and failed is the caller's answer (a completion is
        // not safe to send twice).
        var candidates = instances.map(\.name)
        while true {
            GatewayMetrics.queued.increment(by: 1)
            let slot: BatchAdmission.Slot
            do {
                slot = try await admission.acquire(deployment: key, instances: candidates, limit: deployment.spec.maxBatchSize)
                GatewayMetrics.queued.decrement(by: 1)
            } catch {
                GatewayMetrics.queued.decrement(by: 1)
                throw error
            }
            guard let instance = byName[slot.instance] else {
                slot.release()
                throw APIError(.serviceUnavailable, .unavailable, "the instance picked for \(model) went away; retry")
            }
            GatewayMetrics.inFlight.increment(by: 1)
            let release: @Sendable () -> Void = {
                GatewayMetrics.inFlight.decrement(by: 1)
                slot.release()
            }
            let answer: CurlHTTP.StreamedResponse
            do {
                answer = try await send(request, body: body, to: instance.endpoint, rest: rest)
            } catch {
                release()
                candidates.removeAll { $0 == instance.name }
                if error.code == .couldNotConnect, !error.reachedServer, !candidates.isEmpty {
                    logger.warning("deployment instance does not answer; trying another", metadata: [
                        "gateway.deployment": "\(model)", "gateway.instance": "\(instance.name)", "error": "\(error.message)",
                    ])
                    continue
                }
                throw GatewayFailure.upstream(error, server: "\(model) instance \(instance.name)")
            }
            let admission = self.admission
            return try await Self.response(answer, release: release, countTokens: { admission.recordTokens(key, $0) })
        }
    }

    /// The deployment `model` names, if the caller may use it: from the cache, or from etcd
    /// for one created a moment ago (through another api-server) that the cache has not seen.
    private func deployment(named model: String, caller: Principal) async throws -> Deployment {
        let parts = model.split(separator: "/", maxSplits: 1).map(String.init)
        let mine = caller.role == .admin ? nil : caller.tenant
        var found: Deployment?
        if parts.count == 2, mine == nil || mine == parts[0] {
            found = deployments.get(tenant: parts[0], name: parts[1])
            if found == nil { found = try? await deployments.store.get(Deployment.self, tenant: parts[0], name: parts[1]) }
        }
        guard let deployment = found else {
            let hint = mine.map { " (this token can use \($0)'s deployments: \($0)/<model_name>; GET /v1/openai/models lists them)" } ?? ""
            throw APIError(.notFound, .notFound, "no deployment named \(model)\(hint)", field: "model")
        }
        return deployment
    }

    /// The deployment's instances that are bound, running and answer `/v1/models`.
    func readyInstances(of deployment: Deployment) -> [Instance] {
        let key = "\(deployment.metadata.tenant)/\(deployment.metadata.name)"
        let names = attachments.withLock { $0.byDeployment[key] } ?? []
        return names.sorted().compactMap { name in
            guard let replica = replicas.get(tenant: deployment.metadata.tenant, name: name),
                replica.spec.owner.uid == deployment.metadata.uid, replica.binding != nil,
                replica.status.phase == .running, replica.status.ready == true,
                var endpoint = replica.status.endpoint, !endpoint.isEmpty
            else { return nil }
            while endpoint.hasSuffix("/") { endpoint.removeLast() }
            return Instance(name: name, endpoint: endpoint)
        }
    }

    /// `GET /v1/openai/models`: the caller's deployments as OpenAI models.
    func models(for caller: Principal) throws -> Response {
        struct Model: Encodable {
            var id: String
            var object = "model"
            var ownedBy: String
            var ready: Bool
            enum CodingKeys: String, CodingKey { case id, object, ownedBy = "owned_by", ready }
        }
        struct Listing: Encodable {
            var object = "list"
            var data: [Model]
        }
        let visible = deployments.list().filter { caller.role == .admin || $0.metadata.tenant == caller.tenant }
        let models = visible.map { Model(id: $0.fullName, ownedBy: $0.metadata.tenant, ready: !readyInstances(of: $0).isEmpty) }
        return try HTTPJSON.response(Listing(data: models))
    }
}
