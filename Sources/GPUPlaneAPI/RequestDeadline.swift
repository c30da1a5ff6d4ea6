import GPUPlaneCore
import GPUPlaneStore
import HTTPTypes
import Hummingbird

/// How long a request's client waits for its answer, as it says in `Gpuplane-Timeout-Ms`
/// (whole milliseconds, 1 to 3,600,000): the routes node-agents write through (registration,
/// node, replica and model-server status) stop before their next etcd read or write once it has
/// passed since the request reached this host (``BeatArrival``'s stamp), and answer 504
/// `deadline_exceeded` to nobody.
///
/// Under overload a report can wait in the api-server longer than its agent waits for the
/// answer; the agent gives up, sends it again (then to another api-server), and without a
/// deadline every copy would still be read and written in full: the work grows just when there
/// is least room for it. A client that sends no header has no deadline.
enum RequestDeadline {
    /// The request header's name, as errors name it (``RequestTimeoutHeader``).
    static let headerName = RequestTimeoutHeader.name
    /// The request header: how long the client waits, in whole milliseconds.
    static let header = HTTPField.Name.literal(RequestTimeoutHeader.name)
    /// The longest wait a client may declare (an hour).
    static let longest = RequestTimeoutHeader.longestMilliseconds

    /// When `request`'s client stops waiting: when the request reached this host (or now, where
    /// that is not known) plus its `Gpuplane-Timeout-Ms`; nil without one.
    /// - Throws: 400 `bad_request` naming the header when its value is not 1 to 3,600,000.
    static func of(_ request: Request) throws(APIError) -> ContinuousClock.Instant? {
        guard let text = request.headers[header] else { return nil }
        guard let milliseconds = Int(text), (1...longest).contains(milliseconds) else {
            throw APIError(
                .badRequest, .badRequest,
                "header \(headerName) must be how long the client waits for the answer in whole milliseconds, 1 to \(longest), not '\(text.prefix(40))'",
                field: headerName)
        }
        return (BeatArrival.instant(of: request) ?? .now) + .milliseconds(milliseconds)
    }

    /// Throws ``passed`` when `deadline` has passed.
    static func check(_ deadline: ContinuousClock.Instant?) throws(APIError) {
        if let deadline, ContinuousClock.now >= deadline { throw passed }
    }

    /// The answer once a request's deadline passed (its client no longer reads it).
    static let passed = APIError(
        .gatewayTimeout, .deadlineExceeded,
        "the request waited longer than its Gpuplane-Timeout-Ms before it was done; nothing was written; send it again")
}
