import Foundation
import EtcdClient
import GPUPlaneAPI
import GPUPlaneTestSupport
import Testing

/// `max-registrations-in-flight`: registrations past the bound are answered 503 with a
/// `Retry-After` before they touch etcd.
@Suite struct RegistrationGateTests {
    /// Holds places of `gate` until `release` is called.
    final class Holder: Sendable {
        let release: @Sendable () -> Void
        let task: Task<Void, any Error>
        init(_ gate: RegistrationGate) {
            let (held, continuation) = AsyncStream<Void>.makeStream()
            release = { continuation.finish() }
            task = Task { try await gate.pass { for await _ in held {} } }
        }
    }

    @Test func thePlacesAreBoundedAndFreedAgain() async throws {
        let gate = RegistrationGate(limit: 2)
        let first = Holder(gate), second = Holder(gate)
        try await eventually("two places taken") { gate.current == 2 }
        do {
            _ = try await gate.pass { 1 }
            Issue.record("a third registration passed a gate of two")
        } catch let error as APIError {
            #expect(error.status == .serviceUnavailable && error.code == .unavailable)
            #expect((1...3).contains(error.retryAfter ?? 0), "Retry-After \(String(describing: error.retryAfter))")
        }
        #expect(gate.turnedAway == 1)
        first.release()
        try await first.task.value
        #expect(gate.current == 1)
        #expect(try await gate.pass { 7 } == 7)
        second.release()
        try await second.task.value
        #expect(gate.current == 0)
        // A place is freed when the registration throws, too.
        await #expect(throws: CancellationError.self) { try await gate.pass { throw CancellationError() } }
        #expect(gate.current == 0)
        // 0: no bound.
        let open = RegistrationGate(limit: 0)
        let many = (0..<5).map { _ in Holder(open) }
        try await eventually("five registrations in flight through an open gate") { open.current == 5 }
        for holder in many { holder.release() }
    }

    /// The route goes through the server's gate: with its one place held, a registration is 503
    /// with a Retry-After and writes nothing; with the place free, the same one is 201.
    @Test func aRegistrationPastTheBoundIsTurnedAwayWritingNothing() async throws {
        let (h, server) = try await Harness.start { $0.registrations = RegistrationGate(limit: 1) }
        defer {
            server.task.cancel()
            h.etcd.shutdown()
        }
        let registration = #"{"name": "gated", "gpus": []}"#
        let holder = Holder(h.deps.registrations)
        try await eventually("the one place taken") { h.deps.registrations.current == 1 }
        let refused = try await h.call("POST", "/v1/nodes", token: h.admin, body: registration)
        #expect(refused.status == 503)
        #expect(refused.errorCode == "unavailable")
        #expect(refused.errorMessage.contains("registrations are in flight"), "\(refused.text)")
        #expect((1...3).contains(Int(refused.headers["retry-after"] ?? "") ?? 0), "\(refused.headers)")
        #expect(try await h.client.range(.prefix("/gpuplane/")).kvs.allSatisfy { !$0.keyString.contains("gated") })
        holder.release()
        try await holder.task.value
        #expect(try await h.call("POST", "/v1/nodes", token: h.admin, body: registration).status == 201)
        #expect(h.deps.registrations.current == 0)
        #expect(h.deps.registrations.turnedAway == 1)
    }
}
