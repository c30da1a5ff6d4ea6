import Foundation
import GPUPlaneSystem
import Testing

@Suite struct TextTests {
    @Test func trimmingWhitespace() {
        #expect("  a b \t\r\n".trimmingWhitespace() == "a b")
        #expect(" \n\t ".trimmingWhitespace() == "")
        #expect("x".trimmingWhitespace() == "x")
        #expect("k = v"[...].split(separator: "=").map { $0.trimmingWhitespace() } == ["k", "v"])
        #expect("\r\n  grüße, 東京 \r\n".trimmingWhitespace() == "grüße, 東京")
        #expect(" gp_abc ".utf8.count == 8 && " gp_abc ".trimmingWhitespace().utf8.count == 6)
    }

    @Test func trimmingACharacter() {
        #expect("--a-b--".trimming("-") == "a-b")
        #expect("---".trimming("-") == "")
    }

    @Test func replacingAll() {
        #expect("log-level.x".replacingAll("-", with: "_").replacingAll(".", with: "_") == "log_level_x")
        #expect("a\nb\n".replacingAll("\n", with: " ") == "a b ")
    }

    @Test func percentEncoding() {
        #expect("gpu-node_1.a~b".percentEncoded() == "gpu-node_1.a~b")
        #expect("a b/c?d".percentEncoded() == "a%20b%2Fc%3Fd")
        #expect("é".percentEncoded() == "%C3%A9")
        #expect("localhost/img:1@x".percentEncoded(keeping: "-._~:@/") == "localhost/img:1@x")
        // What Foundation would produce for the same unreserved set.
        let sample = "owner/model name+1%"
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        #expect(sample.percentEncoded() == sample.addingPercentEncoding(withAllowedCharacters: allowed))
    }
}

@Suite struct FileTests {
    @Test func readsAFile() throws {
        let path = NSTemporaryDirectory() + "gpuplane-system-\(UUID().uuidString)"
        try "token\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(try SystemFile.readText(path) == "token\n")
        #expect(try SystemFile.read(path) == Array("token\n".utf8))
    }

    @Test func missingAndUnreadableFilesSayWhy() {
        do {
            _ = try SystemFile.read("/nonexistent/gpuplane")
            Issue.record("read a missing file")
        } catch {
            #expect(error.isMissing)
            #expect(error.description == "/nonexistent/gpuplane: No such file or directory")
        }
        do {
            _ = try SystemFile.read("/")
            Issue.record("read a directory")
        } catch {
            #expect(!error.isMissing)
            #expect(error.reason == "Is a directory")
        }
    }
}

@Suite struct ThreadAndLockTests {
    @Test func lockedSerializesIncrements() async {
        let counter = Locked(0)
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<8 {
                group.addTask { for _ in 0..<1000 { counter.withLock { $0 += 1 } } }
            }
        }
        #expect(counter.withLock { $0 } == 8000)
    }

    @Test func systemThreadRunsNamed() async {
        let name: String = await withCheckedContinuation { continuation in
            SystemThread.start(name: "gpuplane-test-thread-long-name") {
                let comm = (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? ""
                continuation.resume(returning: comm.trimmingWhitespace())
            }
        }
        // The kernel keeps 15 bytes of a thread's name.
        #expect(name == "gpuplane-test-t")
    }

    @Test func conditionWaitTimesOutAndWakes() async {
        let condition = ConditionLock()
        // Times out: nobody broadcasts.
        condition.lock()
        let woken = condition.wait(timeout: .milliseconds(20))
        condition.unlock()
        #expect(!woken)

        // Wakes: a thread sets the flag and broadcasts; the waiter sees it long before its
        // generous deadline.
        let flag = Locked(false)
        let seen: Bool = await withCheckedContinuation { continuation in
            SystemThread.start(name: "waiter") {
                let clock = ContinuousClock()
                let deadline = clock.now.advanced(by: .seconds(30))
                condition.lock()
                while !flag.withLock({ $0 }) && clock.now < deadline {
                    condition.wait(timeout: clock.now.duration(to: deadline))
                }
                condition.unlock()
                continuation.resume(returning: flag.withLock { $0 })
            }
            SystemThread.start(name: "waker") {
                condition.withLock {
                    flag.withLock { $0 = true }
                    condition.broadcast()
                }
            }
        }
        #expect(seen)
    }
}

@Suite struct LockedActionTests {
    /// The closure is called as set, at the same depth of the caller's stack every time. A
    /// `Locked<(() -> Void)?>` read with `withLock { $0 }` stored it back wrapped in two more
    /// thunks at each call: the 1,000th call ran 2,000 frames deeper and 64 KB had leaked.
    @Test func callsTheSameClosureAtTheSameDepth() {
        let depths = Locked<[Int]>([])
        let action = LockedAction { depths.withLock { $0.append(stackAddress()) } }
        for _ in 0..<1_000 { callThrough(action) }
        let marks = depths.withLock { $0 }
        #expect(marks.count == 1_000)
        #expect(Set(marks).count == 1, "called at \(Set(marks).count) depths, \((marks.first ?? 0) - (marks.last ?? 0)) bytes deeper at the last call")
    }

    @Test func replacesAndClears() {
        let calls = Locked<[String]>([])
        let action = LockedAction()
        action()
        action.set { calls.withLock { $0.append("first") } }
        action()
        action.set { calls.withLock { $0.append("second") } }
        action()
        action.set(nil)
        action()
        #expect(calls.withLock { $0 } == ["first", "second"])
    }

    /// The closure runs outside the lock: it may set the action again.
    @Test func theClosureMayReplaceItself() {
        let calls = Locked(0)
        let action = LockedAction()
        action.set { [weak action] in
            calls.withLock { $0 += 1 }
            action?.set(nil)
        }
        action()
        action()
        #expect(calls.withLock { $0 } == 1)
    }
}

@inline(never)
private func callThrough(_ action: LockedAction) { action() }

/// The address of a local of this call: how deep the caller's stack is.
@inline(never)
private func stackAddress() -> Int {
    var local = 0
    return withUnsafeMutablePointer(to: &local) { Int(bitPattern: $0) }
}
