import GPUPlaneSystem
import Testing

@Suite struct TurnsTests {
    /// Twenty tasks of one key: never two in the body at once, and in the order they queued;
    /// a task of another key runs while they wait.
    @Test func oneAtATimePerKeyInOrder() async throws {
        let turns = Turns()
        let inside = Locked(0)
        let most = Locked(0)
        let order = Locked<[Int]>([])
        let release = Gate()
        // The first holds the turn until released, so the others queue behind it in order.
        let first = Task {
            try await turns.run("t") {
                order.withLock { $0.append(0) }
                await release.wait()
            }
        }
        try await until { turns.count("t") == 1 }
        var tasks: [Task<Void, any Error>] = []
        for i in 1..<20 {
            tasks.append(Task {
                try await turns.run("t") {
                    let now = inside.withLock { $0 += 1; return $0 }
                    most.withLock { $0 = max($0, now) }
                    order.withLock { $0.append(i) }
                    await Task.yield()
                    inside.withLock { $0 -= 1 }
                }
            })
            try await until { turns.count("t") == i + 1 }
        }
        // Another key does not wait for "t".
        try await turns.run("u") { order.withLock { $0.append(-1) } }
        release.open()
        try await first.value
        for task in tasks { try await task.value }
        #expect(most.withLock { $0 } == 1)
        #expect(order.withLock { $0 } == [0, -1] + Array(1..<20))
        #expect(turns.count("t") == 0)
    }

    /// A waiter cancelled while queued throws and leaves the queue; the others still get
    /// their turn, and the key is free after.
    @Test func aCancelledWaiterLeavesTheQueue() async throws {
        let turns = Turns()
        let release = Gate()
        let holder = Task { try await turns.run("t") { await release.wait() } }
        try await until { turns.count("t") == 1 }
        let cancelled = Task { try await turns.run("t") { "ran" } }
        try await until { turns.count("t") == 2 }
        let after = Task { try await turns.run("t") { "after" } }
        try await until { turns.count("t") == 3 }
        cancelled.cancel()
        await #expect(throws: CancellationError.self) { try await cancelled.value }
        #expect(turns.count("t") == 2)
        release.open()
        try await holder.value
        #expect(try await after.value == "after")
        #expect(turns.count("t") == 0)
        // A body that throws hands the turn on too.
        struct Boom: Error {}
        await #expect(throws: Boom.self) { try await turns.run("t") { throw Boom() } }
        #expect(try await turns.run("t") { 1 } == 1)
    }

    private func until(_ condition: @escaping () -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while !condition() {
            if ContinuousClock.now > deadline { Issue.record("condition not reached"); return }
            try await Task.sleep(for: .milliseconds(1))
        }
    }
}

/// Tasks wait until it is opened.
private final class Gate: Sendable {
    private let state = Locked<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func wait() async {
        await withCheckedContinuation { continuation in
            let now = state.withLock { s in
                if s.open { return true }
                s.waiters.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }

    func open() {
        let waiters = state.withLock { s in
            s.open = true
            defer { s.waiters = [] }
            return s.waiters
        }
        for waiter in waiters { waiter.resume() }
    }
}
