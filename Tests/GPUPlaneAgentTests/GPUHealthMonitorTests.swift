import Foundation
import GPUPlaneAgent
import GPUPlaneCore
import GPUPlaneTestSupport
import Testing

extension HealthPolicy {
    /// Short waits so tests notice changes quickly; faults last until the test says otherwise.
    static func testing(quietPeriod: Duration = .seconds(600), applicationXIDs: Set<UInt64>? = nil) -> HealthPolicy {
        HealthPolicy(
            applicationXIDs: applicationXIDs ?? HealthPolicy.defaultApplicationXIDs,
            quietPeriod: quietPeriod, eventWait: .milliseconds(200),
            telemetryInterval: .milliseconds(200), lostRetryInterval: .milliseconds(100))
    }
}

/// Starts a monitor on `host`, runs `body`, and always stops it.
func withMonitor<T>(
    _ host: FakeNVMLHost, policy: HealthPolicy = .testing(),
    _ body: (GPUHealthMonitor) async throws -> T
) async throws -> T {
    let monitor = GPUHealthMonitor(library: try host.open(), policy: policy)
    do {
        let first = try await monitor.start()
        #expect(first.gpus.count == host.uuids.count)
        #expect(first.allHealthy)
        let result = try await body(monitor)
        await monitor.stop()
        return result
    } catch {
        await monitor.stop()
        throw error
    }
}

@Suite("GPU health from NVML events")
struct GPUHealthMonitorTests {
    @Test func xid79MarksExactlyThatGPUUnhealthyWithinASecond() async throws {
        let host = try FakeNVMLHost()
        try await withMonitor(host) { monitor in
            #expect(monitor.isEventDriven)
            let injected = Date()
            try host.inject("xid 3 79")
            try await eventually("GPU 3 unhealthy") { !monitor.current.unhealthy.isEmpty }

            let snapshot = monitor.current
            #expect(snapshot.unhealthy.map(\.uuid) == [host.uuids[3]])
            #expect(snapshot.health(ofUUID: host.uuids[3])?.reason == "Xid79")
            #expect(snapshot.takenAt.timeIntervalSince(injected) < 1.0)
        }
    }

    @Test(arguments: [13, 31, 43, 45, 68, 109])
    func applicationXIDsLeaveTheGPUHealthy(xid: Int) async throws {
        let host = try FakeNVMLHost(gpus: 4)
        try await withMonitor(host) { monitor in
            try host.inject("xid 1 \(xid)")
            // Events arrive in order: once the later hardware XID shows, the first was handled.
            try host.inject("xid 2 48")
            try await eventually("GPU 2 unhealthy") { monitor.current.health(ofUUID: host.uuids[2])?.healthy == false }
            #expect(monitor.current.unhealthy.map(\.uuid) == [host.uuids[2]])
            #expect(monitor.current.health(ofUUID: host.uuids[1])?.healthy == true)
        }
    }

    @Test(arguments: [48, 63, 64, 74, 92, 94, 95, 999])
    func hardwareXIDsMarkTheGPUUnhealthy(xid: Int) async throws {
        let host = try FakeNVMLHost(gpus: 2)
        try await withMonitor(host) { monitor in
            try host.inject("xid 0 \(xid)")
            try await eventually("GPU 0 unhealthy") { monitor.current.health(ofUUID: host.uuids[0])?.healthy == false }
            #expect(monitor.current.health(ofUUID: host.uuids[0])?.reason == "Xid\(xid)")
            #expect(monitor.current.health(ofUUID: host.uuids[1])?.healthy == true)
        }
    }

    @Test func theApplicationXIDListIsConfigurable() async throws {
        let host = try FakeNVMLHost(gpus: 3)
        try await withMonitor(host, policy: .testing(applicationXIDs: [79])) { monitor in
            try host.inject("xid 0 79")
            try host.inject("xid 1 13")
            try host.inject("xid 2 48")
            try await eventually("GPU 2 unhealthy") { monitor.current.health(ofUUID: host.uuids[2])?.healthy == false }
            // The configured list replaces the default: 79 is now forgiven, 13 no longer is.
            #expect(monitor.current.unhealthy.map(\.uuid) == [host.uuids[1], host.uuids[2]])
            #expect(monitor.current.unhealthy.map(\.reason) == ["Xid13", "Xid48"])
        }
    }

    @Test func doubleBitECCMarksUnhealthyAndSingleBitDoesNot() async throws {
        let host = try FakeNVMLHost(gpus: 4)
        try await withMonitor(host) { monitor in
            try host.inject("ecc 0 single")
            try host.inject("ecc 1 double")
            try await eventually("GPU 1 unhealthy") { monitor.current.health(ofUUID: host.uuids[1])?.healthy == false }
            #expect(monitor.current.unhealthy.map(\.uuid) == [host.uuids[1]])
            #expect(monitor.current.health(ofUUID: host.uuids[1])?.reason == "DoubleBitECC")
        }
    }

    @Test func anXIDWithNoKnownDeviceMarksEveryGPU() async throws {
        let host = try FakeNVMLHost(gpus: 3)
        try await withMonitor(host) { monitor in
            try host.inject("xid * 79")
            try await eventually("all unhealthy") { monitor.current.unhealthy.count == 3 }
        }
    }

    @Test func gpuLostMarksEveryGPU() async throws {
        let host = try FakeNVMLHost()
        try await withMonitor(host) { monitor in
            try host.inject("lost")
            try await eventually("all 8 lost") { monitor.current.unhealthy.count == 8 }
            #expect(Set(monitor.current.gpus.map(\.reason)) == ["GPULost"])
        }
    }

    @Test func aGPUThatStaysCleanReturnsToServiceAfterTheQuietPeriod() async throws {
        let host = try FakeNVMLHost(gpus: 6)
        try await withMonitor(host, policy: .testing(quietPeriod: .seconds(1))) { monitor in
            let seen = Collected<GPUHealthSnapshot>()
            let updates = monitor.updates()
            let collector = Task { for await snapshot in updates { seen.append(snapshot) } }
            defer { collector.cancel() }

            try host.inject("xid 4 79")
            // Watched through the stream, which keeps every snapshot: polling `current` could
            // miss a one-second outage on a loaded machine.

            // The stream saw it go and come back: healthy, unhealthy (Xid79), healthy. The
            // collector runs on its own task, so wait for it to have the last snapshot too.
            var transitions: [String] = []
            try await eventually("the stream shows the GPU back in service") {
                let states = seen.all.compactMap { $0.health(ofUUID: host.uuids[4]) }.map { $0.reason ?? "ok" }
                transitions = states.reduce(into: [String]()) { if $1 != $0.last { $0.append($1) } }
                return transitions.count >= 3
            }
            #expect(transitions == ["ok", "Xid79", "ok"])
            #expect(monitor.current.allHealthy)
        }
    }

    @Test func aNewFaultRestartsTheQuietPeriod() async throws {
        let host = try FakeNVMLHost(gpus: 2)
        // Long enough that the second fault, a second after the first, comes while the GPU is
        // still out even on a machine so loaded that noticing the first took many seconds (10 s
        // and 20 s were both seen to be too short while the whole suite started).
        let quiet = Duration.seconds(60)
        try await withMonitor(host, policy: .testing(quietPeriod: quiet)) { monitor in
            // Watched through the stream, stamped on arrival: polling `current` could miss the
            // first outage on a loaded machine. Arrival stamps are never early, so the bound
            // checked below can only be loosened by load, never broken by it.
            let seen = Collected<(ContinuousClock.Instant, String)>()
            let updates = monitor.updates()
            let collector = Task {
                for await snapshot in updates {
                    if let health = snapshot.health(ofUUID: host.uuids[0]) { seen.append((.now, health.reason ?? "ok")) }
                }
            }
            defer { collector.cancel() }
            func transitions() -> [(ContinuousClock.Instant, String)] {
                seen.all.reduce(into: []) { if $1.1 != $0.last?.1 { $0.append($1) } }
            }

            let start = ContinuousClock.now
            try host.inject("xid 0 79")
            try await eventually("GPU 0 unhealthy") { transitions().contains { $0.1 == "Xid79" } }
            try await eventually("one second gone") { ContinuousClock.now - start >= .seconds(1) }
            let second = ContinuousClock.now
            try host.inject("xid 0 94")
            try await eventually("GPU 0 back in service", timeout: 60) { transitions().count >= 4 }
            let states = transitions()
            #expect(states.map(\.1) == ["ok", "Xid79", "Xid94", "ok"])
            // Back a whole quiet period after the second fault, not after the first.
            if let back = states.last, back.1 == "ok" { #expect(back.0 - second >= quiet) }
            #expect(monitor.current.allHealthy)
        }
    }

    @Test func aLostGPUReturnsOnlyAfterItAnswersAndStaysClean() async throws {
        let host = try FakeNVMLHost(gpus: 3)
        // A quiet period long enough that a loaded machine's scheduling delays can't make
        // GPU 0's outage below shorter than the polls that look for it.
        try await withMonitor(host, policy: .testing(quietPeriod: .seconds(3))) { monitor in
            // GPU 0's outage is watched through the stream: on a loaded machine, polling
            // `current` could miss it between two looks (it ends a quiet period after the fault).
            let seen = Collected<[String]>()
            let updates = monitor.updates()
            let collector = Task {
                for await snapshot in updates { seen.append(snapshot.unhealthy.map(\.uuid).sorted()) }
            }
            defer { collector.cancel() }
            try host.inject("lost 2")
            try await eventually("GPU 2 lost") { monitor.current.unhealthy.map(\.uuid) == [host.uuids[2]] }
            #expect(monitor.current.unhealthy.map(\.reason) == ["GPULost"])
            // Still lost well past the quiet period: it does not come back on its own.
            let since = ContinuousClock.now
            try await eventually("longer than the quiet period") { ContinuousClock.now - since >= .milliseconds(4_000) }
            #expect(monitor.current.unhealthy.map(\.uuid) == [host.uuids[2]])
            // Other GPUs' events still arrive while one is lost.
            try host.inject("xid 0 79")
            let both = [host.uuids[0], host.uuids[2]].sorted()
            try await eventually("GPU 0 unhealthy too") { seen.all.contains(both) }

            try host.inject("found 2")
            try await eventually("GPU 2 back in service") { monitor.current.health(ofUUID: host.uuids[2])?.healthy == true }
        }
    }

    @Test func telemetryIsRefreshedWithoutChangingHealth() async throws {
        let host = try FakeNVMLHost(gpus: 2)
        try await withMonitor(host) { monitor in
            try host.inject("set 1 temp=87 power_mw=651000 util=99 memory_used_mib=70000")
            try await eventually("new telemetry") { monitor.current.health(ofUUID: host.uuids[1])?.temperatureC == 87 }
            let gpu = try #require(monitor.current.health(ofUUID: host.uuids[1]))
            #expect(gpu.powerW == 651)
            #expect(gpu.utilizationPercent == 99)
            #expect(gpu.memoryUsedMiB == 70000)
            #expect(gpu.healthy)
        }
    }

    @Test func aRisingUncorrectedCounterIsAFaultWhereECCEventsAreMissing() async throws {
        let host = try FakeNVMLHost(gpuLines: [
            "gpu uuid=GPU-counting-only ecc_events=0",
            "gpu uuid=GPU-with-events",
        ])
        let monitor = GPUHealthMonitor(library: try host.open(), policy: .testing())
        try await monitor.start()
        #expect(monitor.isEventDriven)
        // No event for GPU 0: the telemetry poll sees its counter rise.
        try host.inject("ecc 0 double")
        try await eventually("GPU 0 unhealthy") { monitor.current.health(ofUUID: "GPU-counting-only")?.healthy == false }
        #expect(monitor.current.unhealthy.map(\.reason) == ["DoubleBitECC"])
        #expect(monitor.current.health(ofUUID: "GPU-with-events")?.healthy == true)
        await monitor.stop()
    }

    @Test func stopEndsTheUpdatesStream() async throws {
        let host = try FakeNVMLHost(gpus: 1)
        let monitor = GPUHealthMonitor(library: try host.open(), policy: .testing())
        let updates = monitor.updates()
        try await monitor.start()
        let count = Task { await updates.reduce(0) { count, _ in count + 1 } }
        await monitor.stop()
        #expect(await count.value >= 1)
        // A stream asked for after stop ends at once.
        for await _ in monitor.updates() {}
    }

    @Test func aGPULostBeforeStartIsLeftOutLikeTheInventoryLeavesItOut() async throws {
        let host = try FakeNVMLHost(gpus: 3)
        let library = try host.open()
        try host.inject("lost 1")
        let monitor = GPUHealthMonitor(library: library, policy: .testing())
        let first = try await monitor.start()
        #expect(first.gpus.map(\.uuid) == [host.uuids[0], host.uuids[2]])
        #expect(GPUInventory.read(from: library).devices.map(\.uuid) == first.gpus.map(\.uuid))
        try host.inject("xid 2 79")
        try await eventually("GPU 2 unhealthy") { monitor.current.unhealthy.map(\.uuid) == [host.uuids[2]] }
        await monitor.stop()
    }
}
