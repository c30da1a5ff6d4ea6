import Foundation
import GPUPlaneAgent
import GPUPlaneTestSupport
import Testing

/// The engine client against a real `podman system service`.
@Suite(.enabled(if: podmanAvailable, "needs root, podman, runc and busybox-static"))
struct EngineContainerTests {
    @Test func detectsPodman() async throws {
        let (_, engine) = try await SharedPodman.engine()
        try await engine.ping()
        let info = try await engine.engine()
        #expect(info.kind == .podman)
        #expect(info.version.hasPrefix("4.") || info.version.hasPrefix("5."))
        #expect(!info.apiVersion.isEmpty)
    }

    @Test func createStartWithEnvironmentAndLabels() async throws {
        try await withContainers { scope in
            let spec = scope.spec(
                "env", command: ["sh", "-c", "env; sleep 1000"], environment: ["FOO": "bar", "GREETING": "hello world"],
                labels: [ContainerEngine.replicaLabelKey: "tenant-a.app.0"])
            let id = try await scope.run(spec)
            try await eventually("env printed") { try await output(scope.engine, id).contains("FOO=bar") }
            let lines = try await output(scope.engine, id)
            #expect(lines.contains("GREETING=hello world"))
            #expect(!lines.contains { $0.hasPrefix("GPUPLANE_FAKE_GPU") })

            let details = try await scope.engine.inspect(id)
            #expect(details.id == id)
            #expect(details.name == spec.name)
            #expect(details.image == scope.podman.testImage)
            #expect(details.state.status == .running)
            #expect(details.state.isRunning)
            #expect(details.state.startedAt != nil)
            #expect(details.state.finishedAt == nil)
            #expect(details.labels[ContainerEngine.replicaLabelKey] == "tenant-a.app.0")
            #expect(details.labels[ContainerEngine.managedLabel.key] == "true")
            #expect(details.environment["FOO"] == "bar")
            #expect(details.environment["NVIDIA_VISIBLE_DEVICES"] == "void")

            let byName = try await scope.engine.inspect(spec.name)
            #expect(byName.id == id)
        }
    }

    @Test func gpuTwoSeesOnlyGPUTwo() async throws {
        try await withContainers { scope in
            let id = try await scope.run(scope.spec("gpu", command: ["sh", "-c", "env; sleep 1000"], gpus: [2]))
            try await eventually("env printed") {
                try await output(scope.engine, id).contains { $0.hasPrefix("GPUPLANE_FAKE_GPU_INDEX=") }
            }
            let lines = try await output(scope.engine, id)
            #expect(lines.filter { $0.hasPrefix("GPUPLANE_FAKE_GPU_INDEX=") } == ["GPUPLANE_FAKE_GPU_INDEX=2"])
            #expect(lines.filter { $0.hasPrefix("GPUPLANE_FAKE_GPU_UUID=") } == ["GPUPLANE_FAKE_GPU_UUID=\(scope.podman.fakeGPUs[2].uuid)"])
            #expect(lines.filter { $0.hasPrefix("GPUPLANE_FAKE_GPU_") && $0.contains("_UUID=") }.count == 2)
            let details = try await scope.engine.inspect(id)
            #expect(details.security.hostDevices.isEmpty)
            #expect(details.security.violations.isEmpty)
        }
    }

    @Test func twoGPUsSeeExactlyTheirTwo() async throws {
        try await withContainers { scope in
            let id = try await scope.run(scope.spec("gpus", command: ["sh", "-c", "env; sleep 1000"], gpus: [1, 5]))
            try await eventually("env printed") {
                try await output(scope.engine, id).contains { $0.hasPrefix("GPUPLANE_FAKE_GPU_INDEX=") }
            }
            let lines = try await output(scope.engine, id)
            let perGPU = lines.filter { $0.hasPrefix("GPUPLANE_FAKE_GPU_") && $0.contains("_UUID=") && !$0.hasPrefix("GPUPLANE_FAKE_GPU_UUID=") }
            let gpus = scope.podman.fakeGPUs
            #expect(Set(perGPU) == ["GPUPLANE_FAKE_GPU_1_UUID=\(gpus[1].uuid)", "GPUPLANE_FAKE_GPU_5_UUID=\(gpus[5].uuid)"])
        }
    }

    @Test func aGPUTheHostLacksFailsToStart() async throws {
        try await withContainers { scope in
            let id = try await scope.engine.create(scope.spec("nogpu", command: ["true"], gpus: [9]))
            await #expect {
                try await scope.engine.start(id)
            } throws: { ($0 as? EngineError)?.code == .startFailed }
        }
    }

    @Test func stopHonoursTheGracePeriod() async throws {
        try await withContainers { scope in
            // Traps SIGTERM and exits cleanly.
            let polite = try await scope.run(
                scope.spec("polite", command: ["sh", "-c", "trap 'echo bye; exit 0' TERM; echo ready; while :; do sleep 0.1; done"]))
            // PID 1 without a handler ignores SIGTERM: killed when the grace period ends.
            let stubborn = try await scope.run(scope.spec("stubborn", command: ["sh", "-c", "echo ready; sleep 1000"]))
            try await eventually("both ready") {
                let a = try await output(scope.engine, polite)
                let b = try await output(scope.engine, stubborn)
                return a.contains("ready") && b.contains("ready")
            }
            let clock = ContinuousClock()
            // The polite one exits 0 on SIGTERM (a SIGKILL after the grace period would be 137).
            try await scope.engine.stop(polite, gracePeriod: .seconds(20))
            let stubbornTime = try await clock.measure { try await scope.engine.stop(stubborn, gracePeriod: .seconds(1)) }

            let politeState = try await scope.engine.inspect(polite).state
            #expect(politeState.status == .exited)
            #expect(politeState.exitCode == 0)
            #expect(try await output(scope.engine, polite).contains("bye"))

            let stubbornState = try await scope.engine.inspect(stubborn).state
            #expect(stubbornState.status == .exited)
            #expect(stubbornState.exitCode == 137)
            #expect(stubbornTime >= .seconds(1))
            #expect(stubbornState.finishedAt != nil)

            // Stopping a stopped container does nothing.
            try await scope.engine.stop(polite, gracePeriod: .seconds(1))
        }
    }

    @Test func aCrashReportsItsExitCode() async throws {
        try await withContainers { scope in
            let id = try await scope.run(scope.spec("crash", command: ["sh", "-c", "echo dying >&2; exit 3"]))
            let state = try await waitExited(scope.engine, id)
            #expect(state.exitCode == 3)
            #expect(!state.oomKilled)
            #expect(state.finishedAt != nil)
            let lines = try await scope.engine.logs(id, tail: nil)
            #expect(lines.contains(ContainerEngine.LogLine(stream: .stderr, text: "dying")))
        }
    }

    @Test func aMissingImageIsTyped() async throws {
        try await withContainers { scope in
            var spec = scope.spec("noimage", command: ["true"])
            spec.image = "localhost/gpuplane-no-such-image:\(scope.podman.runID)"
            let missing = try await scope.engine.imageExists(spec.image)
            let present = try await scope.engine.imageExists(scope.podman.testImage)
            #expect(!missing)
            #expect(present)
            await #expect {
                try await scope.engine.create(spec)
            } throws: { error in
                guard let error = error as? EngineError else { return false }
                return error.code == .imageMissing && error.subject == spec.image
            }
        }
    }

    @Test func aTakenNameIsTyped() async throws {
        try await withContainers { scope in
            let spec = scope.spec("taken", command: ["true"])
            try await scope.engine.create(spec)
            await #expect {
                try await scope.engine.create(spec)
            } throws: { ($0 as? EngineError)?.code == .nameConflict }
        }
    }

    @Test func listByLabels() async throws {
        try await withContainers { scope in
            let a = try await scope.engine.create(
                scope.spec("list-a", command: ["true"], labels: [ContainerEngine.replicaLabelKey: "r-a"]))
            let b = try await scope.run(
                scope.spec("list-b", command: ["sleep", "1000"], labels: [ContainerEngine.replicaLabelKey: "r-b"]))

            let mine = try await scope.engine.list(labels: scope.scopeLabel.merging([ContainerEngine.managedLabel.key: "true"]) { $1 })
            #expect(Set(mine.map(\.id)) == [a, b])

            let onlyA = try await scope.engine.list(labels: scope.scopeLabel.merging([ContainerEngine.replicaLabelKey: "r-a"]) { $1 })
            #expect(onlyA.map(\.id) == [a])
            #expect(onlyA.first?.status == .created)
            #expect(onlyA.first?.labels[ContainerEngine.replicaLabelKey] == "r-a")
            #expect(onlyA.first?.image == scope.podman.testImage)

            let onlyB = try await scope.engine.list(labels: scope.scopeLabel.merging([ContainerEngine.replicaLabelKey: "r-b"]) { $1 })
            #expect(onlyB.first?.status == .running)
            #expect(onlyB.first?.name.hasPrefix("gpuplane-test-list-b") == true)

            let managed = try await scope.engine.list()
            #expect(Set([a, b]).isSubset(of: Set(managed.map(\.id))))
            #expect(try await scope.engine.list(labels: ["gpuplane.io/replica": "no-such-\(UUID())"]).isEmpty)
        }
    }

    @Test func removeIsIdempotent() async throws {
        try await withContainers { scope in
            let id = try await scope.run(scope.spec("remove", command: ["sleep", "1000"]))
            #expect(try await scope.engine.remove(id) == true)
            await #expect {
                try await scope.engine.inspect(id)
            } throws: { ($0 as? EngineError)?.code == .notFound }
            #expect(try await scope.engine.remove(id) == false)
            await #expect {
                try await scope.engine.start(id)
            } throws: { ($0 as? EngineError)?.code == .notFound }
            await #expect {
                try await scope.engine.logs(id)
            } throws: { ($0 as? EngineError)?.code == .notFound }
        }
    }

    /// A remove whose answer is lost (podman removed the container, the client never heard:
    /// a full run at load 16 hit this with the 30 s deadline) is sent again, finds the
    /// container gone, and still says it removed it rather than "there was none". The fault
    /// comes from a proxy in front of the real podman that drops the first DELETE's answer.
    /// (The deadline is the lost attempt's wait; a loaded podman answered /version in more than
    /// 2 s six times running.)
    @Test func aRemoveWhoseAnswerWasLostStillSaysItRemoved() async throws {
        let (podman, _) = try await SharedPodman.engine()
        let proxy = try AnswerLosingProxy(upstream: podman.socketPath, losingFirst: "DELETE")
        defer { proxy.stop() }
        let lossy = ContainerEngine.Client(ContainerEngine.Configuration(
            socketPath: proxy.socketPath, requestTimeout: .seconds(15), maxRetries: 5, cdiGPUKind: podman.cdiKind))
        try await withContainers { scope in
            let id = try await scope.run(scope.spec("lost-answer", command: ["sleep", "1000"]))
            #expect(try await lossy.remove(id) == true)
            #expect(proxy.dropped == 1, "the first DELETE's answer was dropped")
            await #expect {
                try await scope.engine.inspect(id)
            } throws: { ($0 as? EngineError)?.code == .notFound }
            #expect(try await lossy.remove(id) == false, "a container that is not there is still reported as such")
        }
    }

    @Test func confinementAsInspected() async throws {
        try await withContainers { scope in
            var spec = scope.spec("confined", command: ["sleep", "1000"], gpus: [0], network: .bridge)
            let port = TestEnvironment.freePort()
            spec.ports = [ContainerEngine.PortMapping(containerPort: 8080, hostPort: port)]
            let limit: Int64 = 64 << 20
            spec.memoryLimitBytes = limit
            let id = try await scope.run(spec)
            let details = try await scope.engine.inspect(id)
            #expect(details.security.privileged == false)
            #expect(details.security.networkMode == "bridge")
            #expect(details.security.pidMode != "host")
            #expect(details.security.ipcMode != "host")
            #expect(details.security.hostMounts.isEmpty)
            #expect(details.security.hostDevices.isEmpty)
            #expect(details.security.addedCapabilities.isEmpty)
            #expect(details.security.violations.isEmpty)
            #expect(details.memoryLimitBytes == limit)
            #expect(details.ports == [ContainerEngine.PortMapping(containerPort: 8080, hostPort: port, hostIP: "127.0.0.1")])

            let isolated = try await scope.run(scope.spec("no-network", command: ["sleep", "1000"]))
            #expect(try await scope.engine.inspect(isolated).security.networkMode == "none")
        }
    }

    @Test func logsTailAndFollow() async throws {
        try await withContainers { scope in
            let id = try await scope.run(
                scope.spec("logs", command: ["sh", "-c", "for i in 1 2 3 4 5; do echo line$i; done; sleep 1000"]))
            try await eventually("five lines") { try await output(scope.engine, id).count == 5 }
            #expect(try await scope.engine.logs(id, tail: 2).map(\.text) == ["line4", "line5"])

            let slow = try await scope.run(
                scope.spec("follow", command: ["sh", "-c", "for i in 1 2 3; do echo tick$i; sleep 0.3; done; echo err >&2"]))
            var seen: [ContainerEngine.LogLine] = []
            for try await line in scope.engine.followLogs(slow, tail: nil) { seen.append(line) }
            #expect(seen.map(\.text) == ["tick1", "tick2", "tick3", "err"])
            #expect(seen.last?.stream == .stderr)
            // Following a container that has exited gives its lines once (the follow, then the
            // read again from its last line's second, which skips what the follow gave).
            var again: [String] = []
            for try await line in scope.engine.followLogs(slow, tail: nil) { again.append(line.text) }
            #expect(again == ["tick1", "tick2", "tick3", "err"])
            var lastTwo: [String] = []
            for try await line in scope.engine.followLogs(slow, tail: 2) { lastTwo.append(line.text) }
            #expect(lastTwo == ["tick3", "err"])
        }
    }

    @Test func followingStopsWhenTheReaderDoes() async throws {
        try await withContainers { scope in
            let id = try await scope.run(scope.spec("chatty", command: ["sh", "-c", "while :; do echo tick; sleep 0.05; done"]))
            var count = 0
            for try await _ in scope.engine.followLogs(id) {
                count += 1
                if count == 3 { break }
            }
            #expect(count == 3)
            // The client still works after the aborted stream.
            #expect(try await scope.engine.inspect(id).state.isRunning)
        }
    }

    @Test func eventsOfManagedContainers() async throws {
        try await withContainers { scope in
            let events = try scope.engine.events(labels: scope.scopeLabel)
            let collected = Task {
                var seen: [ContainerEngine.ContainerEvent] = []
                for try await event in events {
                    seen.append(event)
                    if event.action == "died" || event.action == "die" { break }
                }
                return seen
            }
            // The stream is open once the engine answered; give it a moment before acting.
            try await Task.sleep(for: .milliseconds(300))
            let id = try await scope.run(scope.spec("events", command: ["sh", "-c", "exit 4"]))
            let seen = try await withTimeout(seconds: 30) { try await collected.value }
            #expect(seen.allSatisfy { $0.id == id })
            #expect(seen.contains { $0.action == "start" })
            let died = seen.last
            #expect(died?.exitCode == 4)
            #expect(died?.name?.hasPrefix("gpuplane-test-events") == true)
        }
    }
}

/// Took longer than allowed.
struct TookTooLong: Error {}

/// Runs `body`, failing when it takes longer than `seconds`.
func withTimeout<T: Sendable>(seconds: Double, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: .seconds(seconds))
            throw TookTooLong()
        }
        guard let first = try await group.next() else { throw TookTooLong() }
        group.cancelAll()
        return first
    }
}
