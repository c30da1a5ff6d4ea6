extension Duration {
    /// In seconds, as a `Double` (a `TimeInterval`): 1.5 s is `1.5`.
    ///
    /// The one conversion of a `Duration` to floating-point seconds; write `d.seconds`, never
    /// `Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18` again.
    public var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }

    /// Whole nanoseconds, any finer part dropped (NIO's deadlines, and integers on the wire).
    public var wholeNanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }

    /// Whole seconds, any fraction rounded up: 2 s is 2, 2.1 s is 3 (for APIs that take whole
    /// seconds and must not be given less than was asked, such as a lease's TTL or a stop's
    /// grace period).
    public var wholeSecondsRoundedUp: Int64 {
        let (seconds, attoseconds) = components
        return seconds + (attoseconds > 0 ? 1 : 0)
    }
}
