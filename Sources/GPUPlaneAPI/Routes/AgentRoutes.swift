import CurlHTTP
import Foundation
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneSystem
import HTTPTypes
import Hummingbird
import ServiceLifecycle

/// The routes that lead to node-agents' listeners: a replica's container logs, and the key a
/// node-agent checks those requests with.
struct AgentRoutes: Sendable {
    let deps: APIDependencies

    func register(_ routes: RouteTable) {
        routes.add(.get, "/v1/replicas/:tenant/:name/logs") { try await logs($0, $1) }
        routes.add(.get, "/v1/nodes/:name/agent-key") { try await agentKey($0, $1) }
    }

    /// Maps to `GET /v1/nodes/{name}/agent-key`: the key the api-servers sign the node's
    /// listener requests with (``AgentRequestSignature``). Only the node's own agent gets it.
    func agentKey(_ request: Request, _ context: APIContext) async throws -> Response {
        let name = try context.parameter("name")
        let caller = try context.caller()
        guard caller.role == .node else {
            throw APIError(.forbidden, .forbidden, "a node's listener key is given to its own node-agent only")
        }
        guard caller.node == name else {
            throw APIError(.forbidden, .forbidden, "this node token speaks for \(caller.node ?? "no node"), not \(name)")
        }
        struct Answer: Encodable { var key: String }
        return try HTTPJSON.response(Answer(key: PortableSHA256.hex(try await deps.agentLink.key(node: name))))
    }

    /// Maps to `GET /v1/replicas/{tenant}/{name}/logs?tail=N&follow=true`: the replica's
    /// container output (stdout and stderr as written), read from its node's agent; with
    /// `follow`, streamed until the container stops or the caller goes. Authorised like reads
    /// of the replica: a user's own tenant, any for an admin; node tokens are refused.
    func logs(_ request: Request, _ context: APIContext) async throws -> Response {
        let caller = try context.caller()
        let tenant = try context.parameter("tenant")
        let name = try context.parameter("name")
        switch caller.role {
        case .admin: break
        case .user where caller.tenant == tenant: break
        case .user: throw APIError(.notFound, .notFound, "replica \(tenant)/\(name) not found")
        case .node: throw APIError(.forbidden, .forbidden, "container logs are read by users and admins")
        }
        var query: [String] = []
        if let text = request.query("tail") {
            guard let tail = Int(text), (0...1_000_000).contains(tail) else {
                throw APIError(.badRequest, .badRequest, "tail must be a whole number of lines from 0 to 1000000, not '\(text)'", field: "tail")
            }
            query.append("tail=\(tail)")
        }
        let follow: Bool
        switch request.query("follow") {
        case nil, "false", "0": follow = false
        case "true", "1": follow = true
        case let other?: throw APIError(.badRequest, .badRequest, "follow must be true or false, not '\(other)'", field: "follow")
        }
        if follow { query.append("follow=true") }
        let replica: Replica
        do {
            replica = try await deps.store.get(Replica.self, tenant: tenant, name: name)
        } catch let error as StoreError where error.code == .notFound {
            throw APIError(.notFound, .notFound, "replica \(tenant)/\(name) not found")
        }
        guard let binding = replica.binding else {
            throw APIError(.conflict, .conflict, "replica \(tenant)/\(name) is pending: it has no container until the scheduler places it")
        }
        let node = try? await deps.store.get(Node.self, tenant: ObjectMeta.clusterTenant, name: binding.node)
        guard let agentURL = node?.spec.agentURL else {
            throw APIError(
                .serviceUnavailable, .unavailable,
                "node \(binding.node)'s agent serves no logs (its listener is off: port = 0, or the agent predates it)")
        }
        let target = "/v1/logs/\(tenant)/\(name)" + (query.isEmpty ? "" : "?" + query.joined(separator: "&"))
        let answer = try await deps.agentLink.get(node: binding.node, agentURL: agentURL, target: target, follow: follow)
        guard answer.status == 200 else {
            var text = Data()
            do {
                for try await chunk in answer.body where text.count < 4096 { text.append(chunk) }
            } catch {}
            answer.cancel()
            let detail = Self.message(in: text) ?? "status \(answer.status)"
            switch answer.status {
            case 404: throw APIError(.notFound, .notFound, "replica \(tenant)/\(name) has no container on node \(binding.node) yet")
            case 401: throw APIError(.badGateway, .upstream, "node \(binding.node)'s agent refused the api-server's signature (are the clocks in step?): \(detail)")
            default: throw APIError(.badGateway, .upstream, "node \(binding.node)'s agent answered: \(detail)")
            }
        }
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; charset=utf-8"
        headers[.cacheControl] = "no-store"
        // A followed log never ends by itself: the api-server's shutdown ends it (`logs -f` ends).
        return Response(status: .ok, headers: headers, body: .relaying(answer, endingAtShutdown: follow))
    }

    /// The `error.message` of a JSON error body.
    static func message(in data: Data) -> String? {
        struct Body: Decodable {
            struct Inner: Decodable { var message: String }
            var error: Inner
        }
        return (try? JSONDecoder().decode(Body.self, from: data))?.error.message
    }
}

extension ResponseBody {
    /// A body that relays `answer`'s as it arrives (a proxied stream); the transfer is aborted
    /// when the caller goes away or the upstream fails. With `endingAtShutdown` (an endless
    /// stream: a followed log) the api-server's graceful shutdown ends it where it is, as a
    /// whole answer; without, it runs until the shutdown's grace is over (a cut answer then
    /// says it was cut).
    static func relaying(_ answer: CurlHTTP.StreamedResponse, endingAtShutdown: Bool = false) -> ResponseBody {
        ResponseBody { writer in
            func relay() async throws {
                for try await chunk in answer.body { try await writer.write(ByteBuffer(bytes: chunk)) }
            }
            do {
                if endingAtShutdown {
                    try await withGracefulShutdownHandler(operation: relay) { answer.cancel() }
                } else {
                    // Every proxied application request comes here: no handler to register.
                    try await relay()
                }
            } catch {
                answer.cancel()
                guard endingAtShutdown, Task.isShuttingDownGracefully else { throw error }
            }
            try await writer.finish(nil)
        }
    }
}
