@testable import GPUPlaneAgent
import Testing

/// `published-ports-from` and the rules it becomes (the netns test, PodNetworkTests, shows the
/// rules refusing other hosts and pods).
@Suite struct PublishedPortGuardTests {
    @Test func sourcesParseAndNormalise() throws {
        #expect(try PublishedPortSources.parse(" any ") == .any)
        #expect(try PublishedPortSources.parse("10.0.4.11, api.example, 10.0.5.0/24") == .sources(["10.0.4.11", "api.example", "10.0.5.0/24"]))
        #expect(throws: PodNetworkError.self) { try PublishedPortSources.parse(" , ") }
        #expect(throws: PodNetworkError.self) { try PublishedPortSources.parse("10.0.4.0/33") }
        #expect(PublishedPortGuard.cidr("10.0.4.5/24") == "10.0.4.0/24")
        #expect(PublishedPortGuard.cidr("10.0.4.5") == "10.0.4.5/32")
        #expect(PublishedPortGuard.cidr("api.example") == nil && PublishedPortGuard.cidr("::1") == nil)
        let (cidrs, unresolved) = PublishedPortGuard.resolve(["10.0.4.5", "10.0.4.5/32", "localhost", "no-such-host.invalid"])
        #expect(cidrs == ["10.0.4.5/32", "127.0.0.1/32"])
        #expect(unresolved == ["no-such-host.invalid"])
    }

    @Test func rulesReturnTheAllowedAndDropNewConnectionsToTheNode() {
        let guardRules = PublishedPortGuard(ports: 20000...20999)
        #expect(guardRules.chain == "GPUPLANE-PUB-20000-20999")
        let rules = guardRules.rules(allowed: ["10.0.4.11/32"]).split(separator: "\n").map(String.init)
        #expect(rules == [
            "*mangle", ":GPUPLANE-PUB-20000-20999 - [0:0]",
            "-A GPUPLANE-PUB-20000-20999 -i lo -j RETURN",
            "-A GPUPLANE-PUB-20000-20999 -m addrtype --src-type LOCAL -j RETURN",
            "-A GPUPLANE-PUB-20000-20999 -s 10.0.4.11/32 -j RETURN",
            "-A GPUPLANE-PUB-20000-20999 -m addrtype --dst-type LOCAL -m conntrack --ctstate NEW -j DROP",
            "COMMIT",
        ])
    }
}
