/// GPU prices and the meter's arithmetic.
///
/// Rates at coefficient 1.0: Mode 3 $0.50/h, Mode 2 $1.25/h, Mode 1 $2.50/h per GPU.
/// 1,000 credits = $1. The meter bills 5-minute intervals. Money is kept in whole
/// micro-dollars (one millicredit) so sums never drift.
public struct Pricing: Sendable, Hashable {
    /// Micro-dollars in a dollar.
    public static let microDollarsPerDollar: Int64 = 1_000_000
    /// Credits in a dollar.
    public static let creditsPerDollar: Int64 = 1_000
    /// The meter's default interval, in seconds.
    public static let defaultIntervalSeconds = 300

    /// Hourly rate per mode, in micro-dollars.
    public var hourlyMicroDollars: [GPUMode: Int64]
    /// A multiplier per priority tier (1.0 for every tier unless an operator sets otherwise).
    public var coefficients: [GPUPriority: Double]

    /// The published rates with every coefficient at 1.0.
    public static let standard = Pricing(
        hourlyMicroDollars: [.sharedPinned: 500_000, .largePinned: 1_250_000, .dedicated: 2_500_000],
        coefficients: Dictionary(uniqueKeysWithValues: GPUPriority.allCases.map { ($0, 1.0) }))

    /// Makes a price table.
    public init(hourlyMicroDollars: [GPUMode: Int64], coefficients: [GPUPriority: Double]) {
        self.hourlyMicroDollars = hourlyMicroDollars
        self.coefficients = coefficients
    }

    /// The price of `seconds` of one allocation, in micro-dollars, rounded half up.
    /// `gpus` multiplies Mode 1 allocations; shared modes are priced per attachment.
    public func cost(mode: GPUMode, priority: GPUPriority, seconds: Int, gpus: Int = 1) -> Int64 {
        let rate = Double(hourlyMicroDollars[mode] ?? 0) * (coefficients[priority] ?? 1.0)
        let units = mode == .dedicated ? max(gpus, 1) : 1
        let exact = rate * Double(seconds) * Double(units) / 3600
        return Int64(exact.rounded(.toNearestOrAwayFromZero))
    }

    /// Micro-dollars as credits (1,000 credits = $1; one credit = 1,000 micro-dollars).
    public static func credits(microDollars: Int64) -> Double {
        Double(microDollars) / Double(microDollarsPerDollar / creditsPerDollar)
    }

    /// Splits `seconds` of use into the part covered by the plan's included hours and the billable
    /// rest, given how many seconds of this mode the tenant already used this month.
    public static func split(
        seconds: Int, usedThisMonth: Int, includedHours: Int
    ) -> (included: Int, billable: Int) {
        let left = max(includedHours * 3600 - usedThisMonth, 0)
        let included = min(seconds, left)
        return (included, seconds - included)
    }
}
