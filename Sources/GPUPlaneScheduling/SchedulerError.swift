/// The one error type of the scheduler service. Decide by ``code``, never by ``message``.
public struct SchedulerError: Error, Sendable, CustomStringConvertible {
    /// What went wrong, stable for metrics and for deciding in code.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: String, Sendable {
            case leadershipLost, invalidConfiguration, informerStopped
        }
        private let value: Value
        private init(_ value: Value) { self.value = value }

        /// This process no longer leads: the lease expired or a fenced write was refused.
        public static let leadershipLost = Code(.leadershipLost)
        /// A setting can't be used (an unknown warm-pool slug, a zero interval).
        public static let invalidConfiguration = Code(.invalidConfiguration)
        /// An informer stopped while the session needed it.
        public static let informerStopped = Code(.informerStopped)

        /// A short, stable name, safe as a metric label.
        public var description: String { value.rawValue }
    }

    /// What went wrong.
    public let code: Code
    /// For logs only.
    public let message: String

    /// Makes an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "SchedulerError.\(code): \(message)" }
}
