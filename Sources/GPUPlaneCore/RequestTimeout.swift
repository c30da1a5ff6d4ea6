/// The request header a client says how long it waits for the answer with: whole milliseconds,
/// 1 to ``longestMilliseconds``. The node-agent's client sends its request timeout; the
/// api-server stops working on a node-agent's write once that much has passed since the
/// request reached its host (docs/api.md, "Deadlines").
public enum RequestTimeoutHeader {
    /// The header's name.
    public static let name = "Gpuplane-Timeout-Ms"
    /// The longest wait a client may declare (an hour).
    public static let longestMilliseconds = 3_600_000

    /// `duration` as the header's value: whole milliseconds, at least 1 and at most
    /// ``longestMilliseconds``.
    public static func value(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        let total = seconds.multipliedReportingOverflow(by: 1000)
        let longest = Int64(longestMilliseconds)
        guard !total.overflow, total.partialValue < longest else { return String(longest) }
        return String(min(max(total.partialValue + attoseconds / 1_000_000_000_000_000, 1), longest))
    }
}
