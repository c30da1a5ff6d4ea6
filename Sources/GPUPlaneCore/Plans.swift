/// A tenant's plan (the access matrix of `reference/gpu-block-and-modes.txt`).
public enum Plan: String, Codable, Sendable, CaseIterable, Comparable {
    case free, pro, scale, enterprise

    /// "Free", "Pro", "Scale", "Enterprise".
    public var displayName: String { rawValue.prefix(1).uppercased() + rawValue.dropFirst() }

    /// The monthly price in US cents (Enterprise: the starting price).
    public var monthlyPriceCents: Int {
        switch self {
        case .free: return 0
        case .pro: return 2_900
        case .scale: return 29_900
        case .enterprise: return 299_900
        }
    }

    /// Hours included each month per mode, before metered billing starts. Enterprise is by
    /// contract: none are included unless the tenant's contract sets them.
    public func includedHours(_ mode: GPUMode) -> Int {
        switch (self, mode) {
        case (.free, .sharedPinned): return 10
        case (.pro, .sharedPinned): return 60
        case (.scale, .sharedPinned): return 600
        case (.scale, .largePinned): return 240
        default: return 0
        }
    }

    /// Whether this plan may use `model: auto`: the Free plan only ("literal auto (Free plan
    /// only, scheduler picks a small shared model)"); Pro and above name a catalog slug.
    public var allowsAuto: Bool { self == .free }

    /// Whether this plan may use `model: custom` (Mode 1).
    public var allowsCustom: Bool { self == .enterprise }

    /// Whether this plan may name a catalog model of this mode and size.
    public func allows(_ model: CatalogModel) -> Bool {
        switch self {
        case .free: return false
        case .pro: return model.mode == .sharedPinned && model.size == .small
        case .scale, .enterprise: return true
        }
    }

    /// The lowest plan that may name `model`.
    public static func lowest(allowing model: CatalogModel) -> Plan {
        allCases.first { $0.allows(model) } ?? .enterprise
    }

    /// What the plan gives, as the matrix shows it.
    public var accessSummary: String {
        switch self {
        case .free: return "gpu.model: auto only"
        case .pro: return "any small Mode 3 slug"
        case .scale: return "all Mode 2 and Mode 3 models (70B-class unlocked)"
        case .enterprise: return "everything, plus model: custom (Mode 1)"
        }
    }

    private var order: Int { Plan.allCases.firstIndex(of: self) ?? 0 }
    public static func < (lhs: Plan, rhs: Plan) -> Bool { lhs.order < rhs.order }
}
