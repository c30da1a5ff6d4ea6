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
        var request = request
        let body = try await Self.body(collecting: &request)
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
        var instances = readyInstances(of: deployment)
        let held = instances.isEmpty
        if held { instances = try await holdUntilReady(deployment, key: key, request: request) }
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
            var response = try await Self.response(answer, release: release, countTokens: { admission.recordTokens(key, $0) })
            // A held call stopped reading its connection's request stream to see the caller
            // hang up; the connection ends with this answer.
            if held { response.headers[.connection] = "close" }
            return response
        }
    }

    /// Holds a call to a deployment that has no ready instance until one is: the autoscaler
    /// starts one for the cold demand (every load report says `cold` while a call is held, so
    /// any number of held callers ask for the one start), and the replica informer's change
    /// wakes the callers (``ColdStarts``). Returns the ready instances.
    /// - Throws: ``APIError`` 503 at once when the deployment cannot get an instance (being
    ///   deleted), and 503 naming `inference-queue-timeout` when none is ready within it;
    ///   `CancellationError` when the caller hangs up while held.
    private func holdUntilReady(_ deployment: Deployment, key: String, request: Request) async throws -> [Instance] {
        let settings = deployment.spec.settings
        let canStart = DeploymentLoad.instances(
            forDemand: 1, maxBatchSize: deployment.spec.maxBatchSize, minInstances: settings.minInstances, maxInstances: settings.maxInstances) > 0
        guard canStart, deployment.status.state != .deleting else {
            admission.recordCold(key)
            var error = APIError(
                .serviceUnavailable, .unavailable,
                "deployment \(deployment.fullName) has no ready instance and gets none (\(deployment.status.state == .deleting ? "it is being deleted" : "max_instances is \(settings.maxInstances)"))")
            error.retryAfter = 5
            throw error
        }
        let timeout = admission.timeout
        let deadline = ContinuousClock.now + timeout
        let release = admission.hold(key)
        GatewayMetrics.queued.increment(by: 1)
        defer {
            GatewayMetrics.queued.decrement(by: 1)
            release()
        }
        do {
            return try await request.body.consumeWithCancellationOnInboundClose { _ in
                while true {
                    let ready = readyInstances(of: deployment)
                    if !ready.isEmpty { return ready }
                    let outcome = try await coldStarts.wait(for: key, until: deadline) { !readyInstances(of: deployment).isEmpty }
                    guard outcome == .timedOut else { continue }
                    let late = readyInstances(of: deployment)
                    if !late.isEmpty { return late }
                    throw notReadyInTime(deployment, key: key, timeout: timeout)
                }
            }
        } catch is CancellationError {
            // Nobody reads this answer; it names what happened for the request log and metrics.
            logger.debug("caller hung up while held for a start from zero", metadata: ["gateway.deployment": "\(deployment.fullName)"])
            throw APIError(
                HTTPResponse.Status(code: 499, reasonPhrase: "Client Closed Request"), .badRequest,
                "the caller hung up while the call was held for an instance of \(deployment.fullName)")
        }
    }

    /// 503 for a call held `timeout` without an instance turning ready, with what the
    /// deployment has.
    private func notReadyInTime(_ deployment: Deployment, key: String, timeout: Duration) -> APIError {
        let names = attachments.withLock { $0.byDeployment[key] } ?? []
        let replicas = names.compactMap { self.replicas.get(tenant: deployment.metadata.tenant, name: $0) }
        let running = replicas.filter { $0.status.phase == .running }.count
        let placed = replicas.filter { $0.binding != nil }.count
        let settings = deployment.spec.settings
        var error = APIError(
            .serviceUnavailable, .unavailable,
            "no instance of \(deployment.fullName) became ready within \(timeout.components.seconds) s (the api-server's inference-queue-timeout): \(names.count) instance(s), \(placed) placed, \(running) running, none answering yet (min_instances \(settings.minInstances), max_instances \(settings.maxInstances)); the start goes on: retry shortly")
        error.retryAfter = 5
        return error
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
