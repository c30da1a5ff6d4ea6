import Foundation
@testable import GPUPlaneAgent
import GPUPlaneSystem
import Logging
import Testing

/// The heartbeat loop's schedule on a clock of the test's own: beats start one interval apart
/// counted from their starts, so a slow answer does not widen the gap the api-server sees.
@Suite struct HeartbeatScheduleTests {
    /// A clock that moves only when told: a beat takes `latency`, a sleep ends at its instant.
    final class TestClock: @unchecked Sendable {
        let origin = ContinuousClock.now
        private let state = Locked((now: Duration.zero, starts: [Duration](), sleeps: [Duration]()))
        var now: ContinuousClock.Instant { origin + state.withLock { $0.now } }
        var starts: [Duration] { state.withLock { $0.starts } }
        var sleeps: [Duration] { state.withLock { $0.sleeps } }
        func beat(taking latency: Duration) { state.withLock { $0.starts.append($0.now); $0.now += latency } }
        func sleep(until instant: ContinuousClock.Instant) {
            state.withLock { s in
                s.sleeps.append(instant - origin)
                s.now = max(s.now, instant - origin)
            }
        }
    }

    /// Runs the loop until `latencies` are used up; the beat starts (seconds from the first).
    static func schedule(_ latencies: [Duration], notFoundAt: Int? = nil) async -> (starts: [Double], sleeps: [Double], reregistered: Int, answered: [Double]) {
        let clock = TestClock()
        let left = Locked(latencies[...])
        let reregistered = Locked(0)
        let answered = Locked([Duration]())
        await NodeLiveness.beating(
            every: .seconds(1), now: { clock.now }, sleep: { clock.sleep(until: $0) },
            beat: { () async throws(NodeAPIError) in
                guard let latency = left.withLock({ $0.popFirst() }) else {
                    throw NodeAPIError(code: .cancelled, message: "the test's beats are done")
                }
                clock.beat(taking: latency)
                if clock.starts.count - 1 == notFoundAt { throw NodeAPIError(code: .notFound, message: "no such node") }
            },
            reregister: { reregistered.withLock { $0 += 1 } }, answered: { d in answered.withLock { $0.append(d) } },
            logger: Logger(label: "test"))
        func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
        return (clock.starts.map(seconds), clock.sleeps.map(seconds), reregistered.withLock { $0 }, answered.withLock { $0 }.map(seconds))
    }

    @Test func fastAnswersBeatOncePerInterval() async {
        let run = await Self.schedule(Array(repeating: .milliseconds(200), count: 4))
        #expect(run.starts == [0, 1, 2, 3])
        #expect(run.sleeps == [1, 2, 3, 4])
    }

    /// Answers taking 2.5 s: each next beat goes at once, so the api-server sees them 2.5 s
    /// apart (under its 3 s `silent-after`), not 3.5 s as when the pause followed the answer.
    @Test func slowAnswersAreFollowedAtOnce() async {
        let run = await Self.schedule([.milliseconds(2500), .milliseconds(2500), .milliseconds(300), .milliseconds(300)])
        #expect(run.starts == [0, 2.5, 5, 6])
        #expect(run.sleeps == [6, 7])
        // Each answered beat's round trip, for gpuplane_agent_heartbeat_seconds.
        #expect(run.answered == [2.5, 2.5, 0.3, 0.3])
    }

    @Test func anUnknownNodeRegistersAgainAndKeepsTheSchedule() async {
        let run = await Self.schedule(Array(repeating: .milliseconds(100), count: 3), notFoundAt: 1)
        #expect(run.reregistered == 1)
        #expect(run.starts == [0, 1, 2])
        #expect(run.answered.count == 2)
    }
}
