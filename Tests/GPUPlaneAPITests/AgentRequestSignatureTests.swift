import Crypto
import Foundation
import GPUPlaneCore
import GPUPlaneSystem
import Testing

/// The node-agent's own SHA-256/HMAC (it must not link swift-crypto, which needs Foundation)
/// and the request signatures built on it.
@Suite struct AgentRequestSignatureTests {
    /// RFC 4231, test cases 1, 2 and 6 (a key longer than the block).
    @Test func hmacMatchesRFC4231() {
        let cases: [([UInt8], [UInt8], String)] = [
            ([UInt8](repeating: 0x0b, count: 20), Array("Hi There".utf8),
             "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
            (Array("Jefe".utf8), Array("what do ya want for nothing?".utf8),
             "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
            ([UInt8](repeating: 0xaa, count: 131), Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8),
             "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
        ]
        for (key, message, expected) in cases {
            #expect(PortableSHA256.hex(PortableSHA256.hmac(key: key, message: message)) == expected)
        }
    }

    /// Every length around the block and padding boundaries agrees with swift-crypto.
    @Test func agreesWithSwiftCrypto() {
        var random = SplitMix64(seed: 7)
        for length in 0..<260 {
            let message = (0..<length).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            let key = (0..<(length % 90)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            #expect(PortableSHA256.hash(message) == Array(SHA256.hash(data: message)), "length \(length)")
            let mac = HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: key))
            #expect(PortableSHA256.hmac(key: key, message: message) == Array(mac), "length \(length)")
        }
        #expect(PortableSHA256.bytes(hex: "0aFf") == [0x0a, 0xff])
        #expect(PortableSHA256.bytes(hex: "0g") == nil && PortableSHA256.bytes(hex: "abc") == nil)
    }

    @Test func aSignatureOpensOneRequestOnOneNodeForAMinutePlusTheSkew() throws {
        let cluster = [UInt8](repeating: 9, count: 32)
        let key = AgentRequestSignature.nodeKey(clusterKey: cluster, node: "gpu-1")
        #expect(key != AgentRequestSignature.nodeKey(clusterKey: cluster, node: "gpu-2"))
        let target = "/v1/logs/acme/web.api?tail=5"
        let header = AgentRequestSignature.authorization(key: key, method: "GET", target: target, expires: 1_000_060)
        try AgentRequestSignature.verify(header, key: key, method: "GET", target: target, now: 1_000_000)
        func refusal(_ header: String?, key: [UInt8] = key, target: String = target, now: Int64 = 1_000_000) -> AgentRequestSignature.Refusal? {
            do {
                try AgentRequestSignature.verify(header, key: key, method: "GET", target: target, now: now)
                return nil
            } catch { return error }
        }
        // Expired on the api-server's clock, but within the clock skew an agent allows.
        #expect(refusal(header, now: 1_000_061) == nil)
        #expect(refusal(header, now: 1_000_060 + AgentRequestSignature.clockSkew + 1) == .expired)
        #expect(refusal(header, target: "/v1/logs/acme/web.db?tail=5") == .badSignature)
        #expect(refusal(header, key: AgentRequestSignature.nodeKey(clusterKey: cluster, node: "gpu-2")) == .badSignature)
        #expect(refusal(nil) == .missing)
        #expect(refusal("Bearer x") == .missing)
        #expect(refusal("GPUPlane-Agent v2:1:ab") == .malformed)
        let far = AgentRequestSignature.authorization(key: key, method: "GET", target: target, expires: 1_000_000 + 3600)
        #expect(refusal(far) == .expired, "an expiry far ahead is refused too")
    }

    /// A node whose clock is 90 s ahead of the api-server's (or behind) reads a fresh
    /// signature as valid; the fault suite's skewed node (WholeSystemFaultTests) found every
    /// log request refused as expired when the agent compared the expiry with its own clock
    /// and allowed no skew that way.
    @Test func aNodeWhoseClockIsOffWithinTheSkewAcceptsAFreshSignature() throws {
        let key = AgentRequestSignature.nodeKey(clusterKey: [UInt8](repeating: 3, count: 32), node: "gpu-1")
        let target = "/v1/logs/acme/web.api?tail=5"
        let signedAt: Int64 = 2_000_000
        let header = AgentRequestSignature.authorization(key: key, method: "GET", target: target, expires: signedAt + AgentRequestSignature.lifetime)
        for offset: Int64 in [-120, -90, 0, 90, 120] {
            try AgentRequestSignature.verify(header, key: key, method: "GET", target: target, now: signedAt + offset)
        }
        // Past the lifetime plus the skew it is refused, whatever the clock.
        #expect(throws: AgentRequestSignature.Refusal.expired) {
            try AgentRequestSignature.verify(header, key: key, method: "GET", target: target, now: signedAt + AgentRequestSignature.lifetime + 121)
        }
        #expect(throws: AgentRequestSignature.Refusal.expired) {
            try AgentRequestSignature.verify(header, key: key, method: "GET", target: target, now: signedAt - 121)
        }
    }
}
