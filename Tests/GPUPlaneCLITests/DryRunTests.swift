import Foundation
import GPUPlaneCLI
import GPUPlaneCore
import GPUPlaneTestSupport
import Testing

/// `gpuplane apply --dry-run=server`: the api-server checks each document with the caller's
/// plan and the command says what would change, writing nothing.
@Suite(.timeLimit(.minutes(3))) struct DryRunTests {
    @Test func theServerChecksWithTheCallersPlanAndNothingIsWritten() async throws {
        let (base, admin) = try await OnlineCommandTests.Server.shared.get()
        let asAdmin = APIClient(base: base, token: admin)
        let tenant = "dry-" + UUID().uuidString.prefix(8).lowercased()
        _ = try await asAdmin.json(.post, "/v1/tenants", body: Data(#"{"name": "\#(tenant)", "plan": "pro"}"#.utf8))
        let token = try #require(try await asAdmin.json(.post, "/v1/tokens", body: Data(#"{"tenant": "\#(tenant)", "role": "user"}"#.utf8))["token"].string)
        let user = APIClient(base: base, token: token)

        // The same manifest as the apply tests: fine on Pro.
        let fine = try await ApplyCommand.dryRun(data: Data(OnlineCommandTests.manifest.utf8), file: "app.yaml", client: user)
        #expect(fine.ok, "\(fine.lines)")
        #expect(fine.lines == ["application/web created (server dry run)", "deployment/chat-x created (server dry run)"])
        #expect(try await user.call(.get, "/v1/applications/web").status == 404, "a dry run wrote the application")
        #expect(try await user.call(.get, "/v1/deployments/chat-x").status == 404, "a dry run wrote the deployment")

        // Once applied, the same dry run says configured.
        #expect(try await ApplyCommand.apply(data: Data(OnlineCommandTests.manifest.utf8), file: "app.yaml", client: user).ok)
        let again = try await ApplyCommand.dryRun(data: Data(OnlineCommandTests.manifest.utf8), file: "app.yaml", client: user)
        #expect(again.lines == ["application/web configured (server dry run)", "deployment/chat-x configured (server dry run)"])

        // A 70B model (Mode 2) is not on the Pro plan: the server says so at the file's line, in
        // the second document, and nothing is written. (Offline validation cannot know the plan.)
        let refused = """
            application:
              name: big
              pods:
                - name: api
                  image: busybox
            ---
            application:
              name: bigger
              pods:
                - name: api
                  image: busybox
                  gpu: {enabled: true, model: llama-3.3-70b}
            """
        let result = try await ApplyCommand.dryRun(data: Data(refused.utf8), file: "big.yaml", client: user)
        #expect(!result.ok)
        #expect(result.lines.first == "application/big created (server dry run)", "\(result.lines)")
        let finding = try #require(result.lines.dropFirst().first)
        #expect(finding.hasPrefix("big.yaml:12:") && finding.contains("error:") && finding.contains("Scale plan"), "\(finding)")
        #expect(try await user.call(.get, "/v1/applications/big").status == 404)
        #expect(try await user.call(.get, "/v1/applications/bigger").status == 404)
    }
}
