import Foundation

extension LocalCluster {
    /// What ``showApplicationURL(manifest:token:request:timeout:)`` found.
    public struct ApplicationURLAnswer: Sendable {
        /// The application's URL (`status.url`).
        public var url: String
        /// The URL requested: the first path's URL plus `request`.
        public var requested: String
        /// What it answered.
        public var body: String
    }

    /// Applies `manifest` (one application with a pod that has a `path`) for the tenant of
    /// `token`, waits until its first path is ready (`status.routes[0].ready`), and GETs that
    /// path's URL plus `request` (e.g. `/hello`) through the api-server's ingress, as a browser
    /// would (no token). For `gpuplane-local` and the end-to-end tests.
    public func showApplicationURL(manifest: String, token: String, request: String, timeout: Double = 120) async throws
        -> ApplicationURLAnswer
    {
        let applied = try await call("POST", "/v1/applications", token: token, body: manifest)
        let reply = (try? JSONSerialization.jsonObject(with: applied.body)) as? [String: Any]
        guard applied.status == 201 || applied.status == 200, let name = (reply?["metadata"] as? [String: Any])?["name"] as? String else {
            throw Failure(description: "apply answered \(applied.status): \(String(decoding: applied.body, as: UTF8.self))")
        }
        var status: [String: Any] = [:]
        try await eventually("the first path of \(name) is ready", timeout: timeout, every: 0.25) {
            status = try await self.json("GET", "/v1/applications/\(name)", token: token)["status"] as? [String: Any] ?? [:]
            return (status["routes"] as? [[String: Any]])?.first?["ready"] as? Bool == true
        }
        guard let url = status["url"] as? String, let route = (status["routes"] as? [[String: Any]])?.first?["url"] as? String else {
            throw Failure(description: "application \(name) has no URL in its status: \(status)")
        }
        let requested = route + request
        var body = ""
        try await eventually("GET \(requested) answers 200", timeout: 30, every: 0.25) {
            guard requested.hasPrefix(self.apiURL) else { throw Failure(description: "\(requested) is not on \(self.apiURL)") }
            let response = try await self.call("GET", String(requested.dropFirst(self.apiURL.count)))
            body = String(decoding: response.body, as: UTF8.self)
            return response.status == 200
        }
        return ApplicationURLAnswer(url: url, requested: requested, body: body)
    }
}
