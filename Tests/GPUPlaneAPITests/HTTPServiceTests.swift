import Foundation
import Testing

@testable import GPUPlaneAPI

#if canImport(Glibc)
import Glibc
#endif

/// The api-server's own HTTP service (``HTTPService``, in place of Hummingbird's
/// `Application`).
@Suite(.timeLimit(.minutes(2))) struct HTTPServiceTests {
    /// Answers of every kind (a route's, an error's, a missing route's) carry `Date`, as RFC
    /// 9110 asks of a server with a clock, and `Server`, as `Application`'s did.
    @Test func everyAnswerCarriesDateAndServer() async throws {
        let h = try await SharedServer.shared.get()
        let (_, token) = try await h.tenant(.pro)
        for (path, caller, status) in [("/healthz", nil, 200), ("/v1/applications", nil, 401), ("/v1/applications/no-such-app", token, 404)] {
            let before = Date()
            let reply = try await h.call("GET", path, token: caller)
            #expect(reply.status == status, "\(path): \(reply.status)")
            #expect(reply.headers["server"] == "gpuplane-api-server", "\(path): \(reply.headers)")
            let date = try #require(reply.headers["date"], "\(path) has no Date")
            let parsed = try #require(Self.imfFixdate.date(from: date), "\(path): '\(date)' is not an IMF-fixdate")
            // The header has whole seconds: allow for the one the request started in.
            #expect(parsed >= before.addingTimeInterval(-1) && parsed <= Date().addingTimeInterval(1), "\(path): \(date)")
        }
    }

    @Test func theDateIsAnIMFFixdate() {
        var seconds: time_t = 784_111_777
        var parts = tm()
        gmtime_r(&seconds, &parts)
        #expect(HTTPDate.format(parts) == "Sun, 06 Nov 1994 08:49:37 GMT")
        seconds = 1_796_601_605  // 7 December 2026, 00:00:05, a Monday
        gmtime_r(&seconds, &parts)
        #expect(HTTPDate.format(parts) == "Mon, 07 Dec 2026 00:00:05 GMT")
    }

    static var imfFixdate: DateFormatter {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        return formatter
    }
}
