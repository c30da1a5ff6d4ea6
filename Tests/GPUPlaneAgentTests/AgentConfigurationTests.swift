import Foundation
import GPUPlaneAgent
import GPUPlaneService
import Testing

/// The shipped example configuration parses with the agent's own keys, value by value.
@Suite struct AgentConfigurationTests {
    static let example = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("deploy/systemd/node-agent.conf.example")

    @Test func shippedExampleParses() throws {
        let contents = try String(contentsOf: Self.example, encoding: .utf8)
        let config = try Configuration(keys: NodeAgentMain.keys, file: (Self.example.path, contents))
        #expect(try config.string("gpu-mode") == "dedicated")
        #expect(try config.string("model-server-ports") == "20000-20999")
        #expect(try config.duration("quiet-time") == .seconds(300))
        #expect(try config.duration("api-server-return-after") == .seconds(30))
        #expect(try NodeAgentMain.portRange(try config.string("model-server-ports") ?? "") == 20000...20999)
        #expect(try config.string("listen") == "0.0.0.0")
        #expect(try config.int("port") == NodeAgentMain.defaultPort)
    }

    @Test func portRangesAreChecked() throws {
        #expect(try NodeAgentMain.portRange("21000") == 21000...21000)
        #expect(try NodeAgentMain.portRange(" 20000 - 20010 ") == 20000...20010)
        for bad in ["", "0-10", "20-10", "1-70000", "a-b", "1-2-3"] {
            #expect(throws: NodeAgentMain.StartError.self, "\(bad)") { try NodeAgentMain.portRange(bad) }
        }
    }

    @Test func loopbackGatewayURLsAreRecognised() {
        for url in ["http://127.0.0.1:8080", "http://localhost:8080/", "https://[::1]:443", "http://user@127.0.0.2", "http://api.localhost"] {
            #expect(NodeAgentMain.isLoopback(url), "\(url)")
        }
        for url in ["https://gpuplane-api.internal:8080", "http://10.0.0.7:8080", "http://[fd00::1]:80", "not a url"] {
            #expect(!NodeAgentMain.isLoopback(url), "\(url)")
        }
    }
}
