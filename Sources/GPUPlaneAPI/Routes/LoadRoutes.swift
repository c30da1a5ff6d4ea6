import Foundation
import GPUPlaneCore
import GPUPlaneStore
import Hummingbird

/// `GET /v1/load/deployments`: what the gateways see of each deployment's load now, summed
/// over every api-server's last report (``DeploymentLoad``, written every couple of seconds):
/// requests in flight and queued, requests and completion tokens per second. Users see their
/// own tenant's deployments; admins every tenant's (or `?tenant=`'s); node tokens 403.
struct LoadRoutes: Sendable {
    let deps: APIDependencies

    func register(_ routes: RouteTable) {
        routes.add(.get, "/v1/load/deployments") { try await deployments($0, $1) }
    }

    /// One deployment's load.
    struct Item: Encodable {
        var tenant: String
        var name: String
        var inFlight: Int
        var queued: Int
        var requestsPerSecond: Double
        var tokensPerSecond: Double
        /// The api-servers whose reports were summed.
        var reporters: Int
    }

    func deployments(_ request: Request, _ context: APIContext) async throws -> Response {
        let caller = try context.caller()
        let tenant: String?
        switch caller.role {
        case .user: tenant = caller.tenant
        case .admin: tenant = request.query("tenant")
        case .node: throw APIError(.forbidden, .forbidden, "deployment load is read by users and admins")
        }
        let reports: [LoadReports.Report]
        do {
            reports = try await LoadReports(store: deps.store).all()
        } catch {
            throw APIError(.serviceUnavailable, .unavailable, "cannot read the load reports: the store is unavailable; retry")
        }
        var items: [String: Item] = [:]
        for report in reports where tenant == nil || report.tenant == tenant {
            let key = "\(report.tenant)/\(report.deployment)"
            var item = items[key] ?? Item(tenant: report.tenant, name: report.deployment, inFlight: 0, queued: 0, requestsPerSecond: 0, tokensPerSecond: 0, reporters: 0)
            let load = report.load
            let seconds = max(load.seconds ?? 0, 0.001)
            item.inFlight += load.inFlight ?? 0
            item.queued += load.queued ?? 0
            item.requestsPerSecond += Double(load.requests ?? 0) / seconds
            item.tokensPerSecond += Double(load.completionTokens ?? 0) / seconds
            item.reporters += 1
            items[key] = item
        }
        struct Body: Encodable { var items: [Item] }
        return try HTTPJSON.response(Body(items: items.keys.sorted().compactMap { items[$0] }))
    }
}
