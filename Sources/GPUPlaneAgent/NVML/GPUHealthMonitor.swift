#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import Logging
import GPUPlaneSystem

/// How XID and ECC events turn into GPU health.
public struct HealthPolicy: Sendable, Hashable {
    /// XIDs caused by the application, not the hardware (NVIDIA's XID catalogue; the same list
    /// Kubernetes' NVIDIA device plugin skips): 13 graphics engine exception, 31 GPU memory
    /// page fault, 43 GPU stopped processing, 45 preemptive cleanup, 68 video processor
    /// exception, 109 context switch timeout.
    public static let defaultApplicationXIDs: Set<UInt64> = [13, 31, 43, 45, 68, 109]

    /// XIDs that leave the GPU healthy. Every other XID (48 double-bit ECC, 63/64 row
    /// remapping, 74 NVLink, 79 fallen off the bus, 92/94/95 ECC, 999 unknown…) marks the GPU
    /// unhealthy.
    public var applicationXIDs: Set<UInt64>
    /// How long an unhealthy GPU must stay clean (no new fault, answering NVML) before it
    /// returns to service.
    public var quietPeriod: Duration
    /// The longest single `nvmlEventSetWait_v2`; also how long ``GPUHealthMonitor/stop()`` may
    /// take.
    public var eventWait: Duration
    /// How often telemetry and ECC counters are read (the counters catch uncorrected errors on
    /// GPUs without ECC events).
    public var telemetryInterval: Duration
    /// How often a lost GPU is probed to see whether it answers again.
    public var lostRetryInterval: Duration

    /// Makes a policy.
    public init(
        applicationXIDs: Set<UInt64> = HealthPolicy.defaultApplicationXIDs,
        quietPeriod: Duration = .seconds(300),
        eventWait: Duration = .milliseconds(500),
        telemetryInterval: Duration = .seconds(10),
        lostRetryInterval: Duration = .milliseconds(250)
    ) {
        self.applicationXIDs = applicationXIDs
        self.quietPeriod = quietPeriod
        self.eventWait = eventWait
        self.telemetryInterval = telemetryInterval
        self.lostRetryInterval = lostRetryInterval
    }

    /// Whether `xid` is the application's fault and leaves the GPU healthy.
    public func isApplicationXID(_ xid: UInt64) -> Bool { applicationXIDs.contains(xid) }
}

/// The reasons a GPU is out of service, as they appear in ``GPUHealth/reason``.
public enum GPUHealthReason {
    /// A hardware XID, e.g. `Xid79`.
    public static func xid(_ code: UInt64) -> String { "Xid\(code)" }
    /// An uncorrected (double-bit) ECC error, by event or by a rising counter.
    public static let doubleBitECC = "DoubleBitECC"
    /// NVML answers `NVML_ERROR_GPU_IS_LOST`.
    public static let gpuLost = "GPULost"
    /// The GPU could not be read at all when monitoring started.
    public static let unreadable = "Unreadable"
}

/// The health of every GPU at one moment.
public struct GPUHealthSnapshot: Sendable, Hashable {
    /// One record per GPU, in index order.
    public var gpus: [GPUHealth]
    /// When it was taken.
    public var takenAt: Date

    /// Makes a snapshot.
    public init(gpus: [GPUHealth], takenAt: Date = Date()) {
        self.gpus = gpus
        self.takenAt = takenAt
    }

    /// The record of the GPU with `uuid`.
    public func health(ofUUID uuid: String) -> GPUHealth? { gpus.first { $0.uuid == uuid } }

    /// The GPUs out of service.
    public var unhealthy: [GPUHealth] { gpus.filter { !$0.healthy } }

    /// Whether every GPU takes work.
    public var allHealthy: Bool { gpus.allSatisfy(\.healthy) }
}

/// Watches every GPU's health, driven by NVML's XID and ECC events.
///
/// A dedicated thread (never Swift's cooperative pool) blocks in `nvmlEventSetWait_v2`. An XID
/// outside ``HealthPolicy/applicationXIDs`` or a double-bit ECC error marks that GPU unhealthy
/// as soon as the event arrives; an event NVML attributes to no known GPU marks them all; a lost
/// GPU (`NVML_ERROR_GPU_IS_LOST`) is marked and probed until it answers again. A GPU that then
/// stays clean for ``HealthPolicy/quietPeriod`` returns to service. Telemetry and the ECC
/// counters are also read every ``HealthPolicy/telemetryInterval``, which covers GPUs and
/// platforms without events.
///
/// Call ``start()`` once, read ``current`` or iterate ``updates()``, and ``stop()`` when done.
public final class GPUHealthMonitor: Sendable {
    private let engine: Engine

    /// Makes a monitor of every GPU of `library`. Nothing runs until ``start()``.
    public init(
        library: NVMLLibrary, policy: HealthPolicy = HealthPolicy(),
        logger: Logger = Logger(label: "gpuplane.agent.nvml")
    ) {
        engine = Engine(library: library, policy: policy, logger: logger)
    }

    deinit { engine.requestStop() }

    /// Starts the monitoring thread: reads every GPU, registers for XID and ECC events, and
    /// returns the first snapshot (every readable GPU healthy). Calling it again returns the
    /// current snapshot.
    ///
    /// - Throws: when NVML cannot count the GPUs. A GPU without a handle is left out, as
    ///   ``GPUInventory`` leaves it out.
    @discardableResult
    public func start() async throws(NVMLError) -> GPUHealthSnapshot {
        let result = await withCheckedContinuation { continuation in
            engine.start { continuation.resume(returning: $0) }
        }
        return try result.get()
    }

    /// Stops the thread and ends every ``updates()`` stream; returns once the thread has
    /// finished (within ``HealthPolicy/eventWait``).
    public func stop() async {
        await withCheckedContinuation { continuation in
            engine.stop { continuation.resume() }
        }
    }

    /// The latest snapshot (no GPUs before ``start()``).
    public var current: GPUHealthSnapshot { engine.latest }

    /// Whether XID/ECC events are registered on at least one GPU (otherwise the monitor can
    /// only poll).
    public var isEventDriven: Bool { engine.isEventDriven }

    /// The current snapshot, then one per change, until ``stop()``.
    public func updates() -> AsyncStream<GPUHealthSnapshot> { engine.subscribe() }
}

// MARK: - The engine

/// Shared state (under `condition`) plus the thread's loop, whose per-GPU state is its own.
private final class Engine: @unchecked Sendable {
    let library: NVMLLibrary
    let policy: HealthPolicy
    let logger: Logger
    let clock = ContinuousClock()

    private let condition = ConditionLock()
    private var phase = Phase.idle
    private var stopRequested = false
    private var snapshot = GPUHealthSnapshot(gpus: [])
    private var eventDriven = false
    private var subscribers: [Int: AsyncStream<GPUHealthSnapshot>.Continuation] = [:]
    private var nextSubscriber = 0
    private var startWaiters: [@Sendable (Result<GPUHealthSnapshot, NVMLError>) -> Void] = []
    private var stopWaiters: [@Sendable () -> Void] = []

    private enum Phase { case idle, starting, running, failed(NVMLError), finished }

    init(library: NVMLLibrary, policy: HealthPolicy, logger: Logger) {
        self.library = library
        self.policy = policy
        self.logger = logger
    }

    var latest: GPUHealthSnapshot { condition.withLock { snapshot } }
    var isEventDriven: Bool { condition.withLock { eventDriven } }

    // MARK: Control (any thread)

    func start(_ done: @escaping @Sendable (Result<GPUHealthSnapshot, NVMLError>) -> Void) {
        condition.lock()
        switch phase {
        case .idle:
            phase = .starting
            startWaiters.append(done)
            condition.unlock()
            SystemThread.start(name: "gpuplane-nvml-health") { [self] in run() }
        case .starting:
            startWaiters.append(done)
            condition.unlock()
        case .running, .finished:
            let current = snapshot
            condition.unlock()
            done(.success(current))
        case .failed(let error):
            condition.unlock()
            done(.failure(error))
        }
    }

    func requestStop() {
        condition.withLock {
            stopRequested = true
            condition.broadcast()
        }
    }

    func stop(_ done: @escaping @Sendable () -> Void) {
        condition.lock()
        stopRequested = true
        condition.broadcast()
        switch phase {
        case .idle, .failed:
            phase = .finished
            let ended = Array(subscribers.values)
            subscribers = [:]
            condition.unlock()
            ended.forEach { $0.finish() }
            done()
        case .finished:
            condition.unlock()
            done()
        case .starting, .running:
            stopWaiters.append(done)
            condition.unlock()
        }
    }

    func subscribe() -> AsyncStream<GPUHealthSnapshot> {
        let (stream, continuation) = AsyncStream.makeStream(
            of: GPUHealthSnapshot.self, bufferingPolicy: .bufferingNewest(64))
        condition.lock()
        let id = nextSubscriber
        nextSubscriber += 1
        var finished = false
        switch phase {
        case .running:
            continuation.yield(snapshot)
            subscribers[id] = continuation
        case .finished, .failed:
            finished = true
        case .idle, .starting:
            subscribers[id] = continuation
        }
        condition.unlock()
        if finished {
            continuation.finish()
        } else {
            continuation.onTermination = { [weak self] _ in
                self?.condition.withLock { _ = self?.subscribers.removeValue(forKey: id) }
            }
        }
        return stream
    }

    private var shouldStop: Bool { condition.withLock { stopRequested } }

    /// Sleeps up to `duration`, waking early when a stop is requested.
    private func pause(_ duration: Duration) {
        let deadline = clock.now.advanced(by: duration)
        condition.lock()
        while !stopRequested && clock.now < deadline {
            condition.wait(timeout: clock.now.duration(to: deadline))
        }
        condition.unlock()
    }

    private func publish(_ gpus: [GPUHealth]) {
        condition.lock()
        guard gpus != snapshot.gpus else {
            condition.unlock()
            return
        }
        snapshot = GPUHealthSnapshot(gpus: gpus, takenAt: Date())
        let current = snapshot
        let targets = Array(subscribers.values)
        condition.unlock()
        for target in targets { target.yield(current) }
    }

    // MARK: The thread

    /// One GPU as the thread tracks it.
    private struct Tracked {
        let device: NVMLDevice
        var reading: GPUReading
        var healthy = true
        var reason: String?
        /// When the last fault was seen (or the last probe found the GPU still lost).
        var lastFault: ContinuousClock.Instant?
        var lost = false
        var uncorrectedBaseline: UInt64?

        var health: GPUHealth { reading.health(healthy: healthy, reason: reason) }
    }

    private func run() {
        let tracked: [Tracked]
        do {
            tracked = try setUp()
        } catch {
            condition.lock()
            phase = .failed(error)
            let waiters = startWaiters
            startWaiters = []
            let stoppers = stopWaiters
            stopWaiters = []
            let ended = Array(subscribers.values)
            subscribers = [:]
            condition.unlock()
            logger.error("GPU health monitoring could not start", metadata: ["error": "\(error)"])
            waiters.forEach { $0(.failure(error)) }
            ended.forEach { $0.finish() }
            stoppers.forEach { $0() }
            return
        }
        var gpus = tracked
        let eventSet = registerEvents(gpus)

        condition.lock()
        snapshot = GPUHealthSnapshot(gpus: gpus.map(\.health), takenAt: Date())
        eventDriven = eventSet != nil
        phase = .running
        let first = snapshot
        let waiters = startWaiters
        startWaiters = []
        let targets = Array(subscribers.values)
        condition.unlock()
        // Outside the lock: a subscriber's termination handler takes it, under the Swift
        // runtime's lock of its task, which a yield to that task takes too.
        for target in targets { target.yield(first) }
        waiters.forEach { $0(.success(first)) }
        logger.info(
            "GPU health monitoring started",
            metadata: ["gpus": "\(gpus.count)", "events": "\(eventSet != nil)"])

        loop(&gpus, eventSet: eventSet)

        condition.lock()
        phase = .finished
        let ended = Array(subscribers.values)
        subscribers = [:]
        let stoppers = stopWaiters
        stopWaiters = []
        condition.unlock()
        ended.forEach { $0.finish() }
        stoppers.forEach { $0() }
    }

    private func setUp() throws(NVMLError) -> [Tracked] {
        var tracked: [Tracked] = []
        for index in 0..<(try library.deviceCount()) {
            let device: NVMLDevice
            do {
                device = try library.device(at: index)
            } catch {
                // No handle, no UUID: the inventory leaves this GPU out, and so does its health.
                logger.error("GPU has no NVML handle", metadata: ["index": "\(index)", "error": "\(error)"])
                continue
            }
            do {
                let reading = try device.reading()
                tracked.append(Tracked(device: device, reading: reading, uncorrectedBaseline: reading.eccUncorrected))
            } catch {
                let uuid = (try? device.uuid()) ?? "unknown-gpu-\(device.index)"
                var entry = Tracked(
                    device: device,
                    reading: GPUReading(index: device.index, uuid: uuid, name: "", memoryTotalMiB: 0))
                entry.healthy = false
                entry.lost = error.isGPULost
                entry.reason = error.isGPULost ? GPUHealthReason.gpuLost : GPUHealthReason.unreadable
                entry.lastFault = clock.now
                tracked.append(entry)
                logger.warning(
                    "GPU unreadable at start", metadata: ["index": "\(device.index)", "error": "\(error)"])
            }
        }
        return tracked
    }

    /// An event set with XID and ECC events of every GPU that supports them, or `nil` to poll.
    private func registerEvents(_ gpus: [Tracked]) -> NVMLEventSet? {
        guard library.supportsEvents else {
            logger.warning("NVML offers no event API; GPU health is polled only")
            return nil
        }
        let set: NVMLEventSet
        do {
            set = try NVMLEventSet(library: library)
        } catch {
            logger.warning("NVML event set unavailable; GPU health is polled only", metadata: ["error": "\(error)"])
            return nil
        }
        var registered = 0
        for gpu in gpus where !gpu.lost {
            do {
                if !(try set.registerHealthEvents(gpu.device)).isEmpty { registered += 1 }
            } catch {
                logger.warning(
                    "GPU events unavailable", metadata: ["index": "\(gpu.device.index)", "error": "\(error)"])
            }
        }
        return registered > 0 ? set : nil
    }

    private func loop(_ gpus: inout [Tracked], eventSet: NVMLEventSet?) {
        var nextTelemetry = clock.now + policy.telemetryInterval
        var nextLostProbe = clock.now + policy.lostRetryInterval
        var lastWaitError: NVMLError?
        while !shouldStop {
            var slice = policy.eventWait
            let now = clock.now
            slice = min(slice, max(.zero, nextTelemetry - now))
            for gpu in gpus where !gpu.healthy && !gpu.lost {
                if let lastFault = gpu.lastFault {
                    slice = min(slice, max(.zero, lastFault + policy.quietPeriod - now))
                }
            }
            if let eventSet {
                switch eventSet.wait(milliseconds: slice.milliseconds) {
                case .event(let event):
                    handle(event, &gpus)
                case .timeout:
                    break
                case .failed(let error) where error.isGPULost:
                    markLostAfterWait(&gpus)
                    pause(policy.lostRetryInterval)
                case .failed(let error):
                    // Said once per kind of failure, not every retry.
                    if error != lastWaitError {
                        logger.warning("NVML event wait failed", metadata: ["error": "\(error)"])
                        lastWaitError = error
                    }
                    pause(policy.lostRetryInterval)
                }
            } else {
                pause(slice)
            }

            let after = clock.now
            if gpus.contains(where: \.lost), after >= nextLostProbe {
                probeLost(&gpus)
                nextLostProbe = after + policy.lostRetryInterval
            }
            if after >= nextTelemetry {
                refreshTelemetry(&gpus)
                nextTelemetry = after + policy.telemetryInterval
            }
            recover(&gpus, now: after)
            publish(gpus.map(\.health))
        }
    }

    private func fault(_ index: Int?, _ reason: String, _ gpus: inout [Tracked]) {
        let now = clock.now
        for position in gpus.indices where index == nil || gpus[position].device.index == index {
            if gpus[position].healthy {
                logger.warning(
                    "GPU marked unhealthy",
                    metadata: ["index": "\(gpus[position].device.index)", "uuid": "\(gpus[position].reading.uuid)",
                               "reason": "\(reason)"])
            }
            gpus[position].healthy = false
            gpus[position].reason = reason
            gpus[position].lastFault = now
        }
    }

    private func handle(_ event: NVMLEvent, _ gpus: inout [Tracked]) {
        if let xid = event.xid {
            if policy.isApplicationXID(xid) {
                logger.info(
                    "application XID; GPU stays in service",
                    metadata: ["index": "\(event.deviceIndex.map(String.init) ?? "unknown")", "xid": "\(xid)"])
            } else {
                fault(event.deviceIndex, GPUHealthReason.xid(xid), &gpus)
            }
        }
        if event.types.contains(.doubleBitECCError) {
            fault(event.deviceIndex, GPUHealthReason.doubleBitECC, &gpus)
        }
        if event.types.contains(.singleBitECCError) {
            logger.debug("corrected ECC error", metadata: ["index": "\(event.deviceIndex.map(String.init) ?? "unknown")"])
        }
    }

    private func isLost(_ device: NVMLDevice) -> Bool {
        do {
            _ = try device.memory()
            return false
        } catch {
            return error.isGPULost
        }
    }

    private func markLost(_ position: Int, _ gpus: inout [Tracked]) {
        if !gpus[position].lost {
            logger.error(
                "GPU lost", metadata: ["index": "\(gpus[position].device.index)", "uuid": "\(gpus[position].reading.uuid)"])
        }
        gpus[position].lost = true
        gpus[position].healthy = false
        gpus[position].reason = GPUHealthReason.gpuLost
        gpus[position].lastFault = clock.now
    }

    /// The event wait said a GPU is lost: find which; if none owns up, all of them.
    private func markLostAfterWait(_ gpus: inout [Tracked]) {
        let lost = gpus.indices.filter { isLost(gpus[$0].device) }
        for position in lost.isEmpty ? Array(gpus.indices) : lost {
            markLost(position, &gpus)
        }
    }

    private func probeLost(_ gpus: inout [Tracked]) {
        for position in gpus.indices where gpus[position].lost {
            if isLost(gpus[position].device) {
                gpus[position].lastFault = clock.now
            } else {
                gpus[position].lost = false
                logger.info("lost GPU answers again", metadata: ["index": "\(gpus[position].device.index)"])
            }
        }
    }

    private func refreshTelemetry(_ gpus: inout [Tracked]) {
        for position in gpus.indices where !gpus[position].lost {
            do {
                let reading = try gpus[position].device.reading()
                if let uncorrected = reading.eccUncorrected {
                    if let baseline = gpus[position].uncorrectedBaseline, uncorrected > baseline {
                        fault(gpus[position].device.index, GPUHealthReason.doubleBitECC, &gpus)
                    }
                    gpus[position].uncorrectedBaseline = uncorrected
                }
                gpus[position].reading = reading
            } catch where error.isGPULost {
                markLost(position, &gpus)
            } catch {
                logger.debug(
                    "telemetry read failed", metadata: ["index": "\(gpus[position].device.index)", "error": "\(error)"])
            }
        }
    }

    private func recover(_ gpus: inout [Tracked], now: ContinuousClock.Instant) {
        for position in gpus.indices where !gpus[position].healthy && !gpus[position].lost {
            guard let lastFault = gpus[position].lastFault, now - lastFault >= policy.quietPeriod else { continue }
            logger.info(
                "GPU back in service after quiet period",
                metadata: ["index": "\(gpus[position].device.index)", "was": "\(gpus[position].reason ?? "")"])
            gpus[position].healthy = true
            gpus[position].reason = nil
            gpus[position].lastFault = nil
        }
    }
}

extension Duration {
    /// In whole milliseconds, clamped to `0...UInt32.max`.
    var milliseconds: UInt32 {
        let value = (seconds * 1000).rounded(.up)
        if value <= 0 { return 0 }
        return value >= Double(UInt32.max) ? UInt32.max : UInt32(value)
    }
}
