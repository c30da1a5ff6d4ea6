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
        let byDeployment = Dictionary(grouping: reports.filter { tenant == nil || $0.tenant == tenant }) { "\($0.tenant)/\($0.deployment)" }
        let items = byDeployment.keys.sorted().compactMap { key -> Item? in
            guard let mine = byDeployment[key], let first = mine.first else { return nil }
            let total = DeploymentLoad.Total(mine.map(\.load))
            return Item(
                tenant: first.tenant, name: first.deployment, inFlight: total.inFlight, queued: total.queued,
                requestsPerSecond: total.requestsPerSecond, tokensPerSecond: total.tokensPerSecond, reporters: total.reporters)
        }
        struct Body: Encodable { var items: [Item] }
        return try HTTPJSON.response(Body(items: items))
    }
}
