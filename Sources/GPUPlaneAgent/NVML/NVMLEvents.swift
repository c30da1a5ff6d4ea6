internal import CNVML

/// NVML event types (the `nvmlEventType…` bits).
public struct NVMLEventTypes: OptionSet, Hashable, Sendable {
    /// The bit mask.
    public let rawValue: UInt64
    /// Makes a mask.
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// `nvmlEventTypeSingleBitEccError`: a corrected memory error.
    public static let singleBitECCError = NVMLEventTypes(rawValue: UInt64(nvmlEventTypeSingleBitEccError))
    /// `nvmlEventTypeDoubleBitEccError`: an uncorrected memory error.
    public static let doubleBitECCError = NVMLEventTypes(rawValue: UInt64(nvmlEventTypeDoubleBitEccError))
    /// `nvmlEventTypePState`.
    public static let pState = NVMLEventTypes(rawValue: UInt64(nvmlEventTypePState))
    /// `nvmlEventTypeXidCriticalError`: the driver logged an XID.
    public static let xidCriticalError = NVMLEventTypes(rawValue: UInt64(nvmlEventTypeXidCriticalError))
    /// `nvmlEventTypeClock`.
    public static let clock = NVMLEventTypes(rawValue: UInt64(nvmlEventTypeClock))

    /// What health monitoring listens to: XIDs and both ECC kinds.
    public static let health: NVMLEventTypes = [.xidCriticalError, .singleBitECCError, .doubleBitECCError]
}

/// One event delivered by `nvmlEventSetWait_v2`.
public struct NVMLEvent: Sendable, Hashable {
    /// The index of the GPU it happened on, or `nil` when NVML named no device this set knows.
    public var deviceIndex: Int?
    /// Which event.
    public var types: NVMLEventTypes
    /// For XID events, the XID (999 when the driver does not know it); 0 otherwise.
    public var data: UInt64
    /// With MIG, the GPU instance; `nil` when not attributable to one.
    public var gpuInstanceID: UInt32?
    /// With MIG, the compute instance; `nil` when not attributable to one.
    public var computeInstanceID: UInt32?

    /// Makes an event.
    public init(
        deviceIndex: Int?, types: NVMLEventTypes, data: UInt64, gpuInstanceID: UInt32? = nil,
        computeInstanceID: UInt32? = nil
    ) {
        self.deviceIndex = deviceIndex
        self.types = types
        self.data = data
        self.gpuInstanceID = gpuInstanceID
        self.computeInstanceID = computeInstanceID
    }

    /// The XID, when this is an XID event.
    public var xid: UInt64? { types.contains(.xidCriticalError) ? data : nil }
}

/// An NVML event set: devices register event types, and ``wait(milliseconds:)`` blocks until
/// one arrives. Use it from one dedicated thread; freed (`nvmlEventSetFree`) on deinit.
public final class NVMLEventSet: @unchecked Sendable {
    /// What a wait ended with.
    public enum WaitResult: Sendable, Hashable {
        /// An event.
        case event(NVMLEvent)
        /// Nothing happened within the timeout.
        case timeout
        /// Any other outcome; `NVML_ERROR_GPU_IS_LOST` among them (``NVMLError/isGPULost``).
        case failed(NVMLError)
    }

    /// The library the set belongs to.
    public let library: NVMLLibrary
    private let set: nvmlEventSet_t
    private var registered: [(handle: nvmlDevice_t, index: Int)] = []

    /// Creates an empty set (`nvmlEventSetCreate`).
    public init(library: NVMLLibrary) throws(NVMLError) {
        guard let create = library.api.eventSetCreate, library.supportsEvents else {
            throw library.api.missing("nvmlEventSetCreate")
        }
        var set: nvmlEventSet_t?
        try library.check(NVMLReturn(create(&set)), "nvmlEventSetCreate")
        guard let set else {
            throw NVMLError(
                code: .callFailed, result: .unknown, function: "nvmlEventSetCreate",
                message: "NVML returned success and no event set")
        }
        self.library = library
        self.set = set
    }

    deinit {
        if let free = library.api.eventSetFree { _ = free(set) }
    }

    /// Registers `types` of `device` (`nvmlDeviceRegisterEvents`). Not thread-safe with
    /// ``wait(milliseconds:)``: register first, then wait.
    public func register(_ device: NVMLDevice, for types: NVMLEventTypes) throws(NVMLError) {
        guard let register = library.api.deviceRegisterEvents else {
            throw library.api.missing("nvmlDeviceRegisterEvents")
        }
        try library.check(NVMLReturn(register(device.handle, types.rawValue, set)), "nvmlDeviceRegisterEvents")
        if !registered.contains(where: { $0.handle == device.handle }) {
            registered.append((device.handle, device.index))
        }
    }

    /// Registers the health events (XID, ECC) `device` lists as supported; when it lists ECC
    /// events but refuses them (ECC disabled), its XIDs alone. Answers what was registered
    /// (empty, registering nothing, when it lists none).
    public func registerHealthEvents(_ device: NVMLDevice) throws(NVMLError) -> NVMLEventTypes {
        let supported = (try? device.supportedEventTypes()) ?? .health
        let wanted = supported.intersection(.health)
        guard !wanted.isEmpty else { return [] }
        do {
            try register(device, for: wanted)
            return wanted
        } catch where error.isNotSupported && wanted != .xidCriticalError && wanted.contains(.xidCriticalError) {
            // Some boards list ECC events but refuse them (ECC disabled): keep the XIDs.
            try register(device, for: .xidCriticalError)
            return .xidCriticalError
        }
    }

    /// Blocks for at most `milliseconds` waiting for an event (`nvmlEventSetWait_v2`). Call it
    /// only from a dedicated thread.
    public func wait(milliseconds: UInt32) -> WaitResult {
        guard let wait = library.api.eventSetWait else {
            return .failed(library.api.missing("nvmlEventSetWait_v2"))
        }
        var data = nvmlEventData_t()
        // The unversioned symbol fills only the first three fields.
        data.gpuInstanceId = CNVML_INSTANCE_ID_NONE
        data.computeInstanceId = CNVML_INSTANCE_ID_NONE
        let result = NVMLReturn(wait(set, &data, milliseconds))
        if result == .timeout { return .timeout }
        do {
            try library.check(result, library.api.eventSetWaitName)
        } catch {
            return .failed(error)
        }
        let index = data.device.flatMap { device in registered.first { $0.handle == device }?.index }
        return .event(
            NVMLEvent(
                deviceIndex: index, types: NVMLEventTypes(rawValue: UInt64(data.eventType)),
                data: UInt64(data.eventData),
                gpuInstanceID: data.gpuInstanceId == CNVML_INSTANCE_ID_NONE ? nil : data.gpuInstanceId,
                computeInstanceID: data.computeInstanceId == CNVML_INSTANCE_ID_NONE
                    ? nil : data.computeInstanceId))
    }
}
