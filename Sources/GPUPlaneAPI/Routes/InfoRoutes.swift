import Foundation
import GPUPlaneCore
import GPUPlaneStore
import Hummingbird

/// `/v1/models`, `/v1/usage`, `/v1/events`.
struct InfoRoutes: Sendable {
    let deps: APIDependencies

    func register(_ routes: RouteTable) {
        routes.add(.get, "/v1/models") { try await models($0, $1) }
        routes.add(.get, "/v1/usage") { try await usage($0, $1) }
        routes.add(.get, "/v1/events") { try await events($0, $1) }
    }

    struct ModelView: Encodable {
        var slug: String
        var mode: Int
        var size: String
        var vramGB: Int?
        var useCase: String
        var plans: [Plan]
        var available: Bool?
    }

    /// Maps to `GET /v1/models`: the catalog with per-plan availability, and whether the
    /// caller's plan may use each model.
    func models(_ request: Request, _ context: APIContext) async throws -> Response {
        let caller = try context.caller()
        let plan = caller.role == .user ? (try? await Admission(deps: deps).tenant(caller.tenant))?.spec.plan : nil
        var items = deps.catalog.models.map { model in
            let plans = Plan.allCases.filter { $0.allows(model) }
            return ModelView(
                slug: model.slug, mode: model.mode.rawValue, size: model.size.rawValue, vramGB: model.vramGB,
                useCase: model.useCase, plans: plans, available: plan.map { plans.contains($0) })
        }
        items.append(ModelView(
            slug: Catalog.auto, mode: GPUMode.sharedPinned.rawValue, size: "small", vramGB: deps.catalog.autoModel?.vramGB,
            useCase: "the scheduler picks a small shared model", plans: Plan.allCases.filter(\.allowsAuto), available: plan.map(\.allowsAuto)))
        items.append(ModelView(
            slug: Catalog.custom, mode: GPUMode.dedicated.rawValue, size: "raw", vramGB: nil,
            useCase: "whole GPUs for your own server (memoryGB up to \(deps.maxGPUMemoryGB))",
            plans: Plan.allCases.filter(\.allowsCustom), available: plan.map(\.allowsCustom)))
        return try HTTPJSON.response(["models": items])
    }

    struct UsageView: Encodable {
        struct ModeUsage: Encodable {
            var mode: Int
            var seconds: Int
            var includedSeconds: Int
            var billableSeconds: Int
            var includedHoursLeft: Double
            var costUSD: Double
        }
        var tenant: String
        var plan: Plan
        var monthStart: Date
        var credits: Double
        var costUSD: Double
        var spendingLimitUSD: Double?
        var modes: [ModeUsage]
        var records: [UsageRecord]
    }

    /// Maps to `GET /v1/usage`: this month's metered intervals, credits, included hours left.
    func usage(_ request: Request, _ context: APIContext) async throws -> Response {
        let tenantName = try context.planTenant(request)
        let tenant = try await Admission(deps: deps).tenant(tenantName)
        let start = Admission.monthStart(Date())
        let records: [UsageRecord]
        records = try await deps.store.list(UsageRecord.self, tenant: tenantName).items.filter { $0.spec.intervalStart >= start }
        let cost = records.reduce(Int64(0)) { $0 + $1.spec.costMicroDollars }
        let modes = GPUMode.allCases.map { mode -> UsageView.ModeUsage in
            let mine = records.filter { $0.spec.mode == mode }
            let included = mine.reduce(0) { $0 + $1.spec.includedSeconds }
            return UsageView.ModeUsage(
                mode: mode.rawValue, seconds: mine.reduce(0) { $0 + $1.spec.seconds }, includedSeconds: included,
                billableSeconds: mine.reduce(0) { $0 + $1.spec.billableSeconds },
                includedHoursLeft: max(Double(tenant.includedHours(mode) * 3600 - included), 0) / 3600,
                costUSD: Double(mine.reduce(Int64(0)) { $0 + $1.spec.costMicroDollars }) / 1e6)
        }
        return try HTTPJSON.response(UsageView(
            tenant: tenantName, plan: tenant.spec.plan, monthStart: start, credits: Pricing.credits(microDollars: cost),
            costUSD: Double(cost) / 1e6, spendingLimitUSD: tenant.spec.spendingLimitMicroDollars.map { Double($0) / 1e6 },
            modes: modes, records: records))
    }

    /// Maps to `GET /v1/events?kind=&name=`: what happened to the caller's objects, newest last.
    func events(_ request: Request, _ context: APIContext) async throws -> Response {
        let tenant = try context.tenant(request)
        let kind = request.query("kind")
        let name = request.query("name")
        if let kind, ResourceKind(rawValue: kind) == nil {
            throw APIError(.badRequest, .badRequest, "kind must be one of \(ResourceKind.allCases.map(\.rawValue).joined(separator: ", "))", field: "kind")
        }
        let filter: @Sendable (Event) -> Bool = { event in
            (kind == nil || event.spec.involved.kind.rawValue == kind) && (name == nil || event.spec.involved.name == name)
        }
        if request.wantsWatch {
            return try await WatchStreamer(deps: deps).response(Event.self, tenant: tenant, request: request, filter: filter)
        }
        let list = try await deps.store.list(Event.self, tenant: tenant)
        let items = list.items.filter(filter).sorted { $0.spec.lastSeen < $1.spec.lastSeen }
        return try HTTPJSON.response(ListBody(items: items, resourceVersion: String(list.revision)))
    }
}
