import Foundation
@testable import GPUPlaneAPI
import GPUPlaneTestSupport
import GPUPlaneSystem
import Testing

/// The api-server's one clock of watch bookmarks: every registered watch is ticked at its
/// interval, a cancelled one no more, and an interval's task ends with its last watch.
@Suite struct BookmarkTicksTests {
    @Test func everyWatchIsTickedUntilItsRegistrationIsCancelled() async throws {
        let ticks = BookmarkTicks()
        let counts = Locked([0, 0, 0])
        let a = ticks.add(every: 0.02) { counts.withLock { $0[0] += 1 } }
        let b = ticks.add(every: 0.02) { counts.withLock { $0[1] += 1 } }
        let c = ticks.add(every: 0.5) { counts.withLock { $0[2] += 1 } }
        #expect(ticks.intervals == 2)
        try await eventually("both watches of the short interval ticked twice") { counts.withLock { $0[0] >= 2 && $0[1] >= 2 } }

        a.cancel()
        let stopped = counts.withLock { $0[0] }
        try await eventually("b ticked five more times") { counts.withLock { $0[1] } >= stopped + 5 }
        // One tick may have been under way as `a` was cancelled.
        #expect(counts.withLock { $0[0] } <= stopped + 1)

        b.cancel()
        #expect(ticks.intervals == 1)
        c.cancel()
        #expect(ticks.intervals == 0)
        // A new watch starts a clock again.
        let again = Locked(0)
        let d = ticks.add(every: 0.02) { again.withLock { $0 += 1 } }
        try await eventually("a watch added after the last one went is ticked") { again.withLock { $0 } >= 1 }
        d.cancel()
    }
}
