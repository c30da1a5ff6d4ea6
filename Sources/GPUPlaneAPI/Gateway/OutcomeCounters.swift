import Metrics

/// One counter per outcome of a kind of request (`<label>{outcome="…"}`), made once, so
/// counting a request looks nothing up in the metrics registry.
struct OutcomeCounters<Outcome: CaseIterable & Hashable & RawRepresentable & Sendable>: Sendable where Outcome.RawValue == String {
    /// The metric's name.
    let label: String
    private let counters: [Outcome: Counter]

    /// Registers `label` with one `outcome` dimension per case.
    init(label: String) {
        self.label = label
        counters = Dictionary(uniqueKeysWithValues: Outcome.allCases.map { ($0, Counter(label: label, dimensions: [("outcome", $0.rawValue)])) })
    }

    /// The counter of `outcome`.
    subscript(_ outcome: Outcome) -> Counter {
        counters[outcome] ?? Counter(label: label, dimensions: [("outcome", outcome.rawValue)])
    }
}
