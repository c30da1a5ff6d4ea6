internal import CNVML
import GPUPlaneCore

/// One GPU as NVML addresses it. Each query is one blocking NVML call.
public struct NVMLDevice: @unchecked Sendable {
    /// The library the handle belongs to (kept alive by the device).
    public let library: NVMLLibrary
    /// The NVML index.
    public let index: Int
    /// The `nvmlDevice_t`; valid while `library` is initialised.
    let handle: nvmlDevice_t

    init(library: NVMLLibrary, index: Int, handle: nvmlDevice_t) {
        self.library = library
        self.index = index
        self.handle = handle
    }

    private var api: NVMLLibrary.API { library.api }

    /// The UUID, `GPU-…` (`nvmlDeviceGetUUID`).
    public func uuid() throws(NVMLError) -> String {
        let handle = handle
        let getUUID = api.deviceGetUUID
        return try library.readString("nvmlDeviceGetUUID", capacity: Int(NVML_DEVICE_UUID_V2_BUFFER_SIZE)) {
            getUUID(handle, $0, $1)
        }
    }

    /// The product name, e.g. `NVIDIA H100 80GB HBM3` (`nvmlDeviceGetName`).
    public func name() throws(NVMLError) -> String {
        guard let getName = api.deviceGetName else { throw api.missing("nvmlDeviceGetName") }
        let handle = handle
        return try library.readString("nvmlDeviceGetName", capacity: Int(NVML_DEVICE_NAME_V2_BUFFER_SIZE)) {
            getName(handle, $0, $1)
        }
    }

    /// The PCI bus id, `00000000:01:00.0` (`nvmlDeviceGetPciInfo_v3`; older libraries give the
    /// 4-digit-domain form).
    public func pciBusID() throws(NVMLError) -> String {
        guard let getPci = api.deviceGetPciInfo else { throw api.missing("nvmlDeviceGetPciInfo_v3") }
        var info = nvmlPciInfo_t()
        try library.check(NVMLReturn(getPci(handle, &info)), "nvmlDeviceGetPciInfo_v3")
        if api.pciInfoIsV3 {
            return withUnsafeBytes(of: &info.busId) { decodeCString($0.bindMemory(to: CChar.self)) }
        }
        return withUnsafeBytes(of: &info.busIdLegacy) { decodeCString($0.bindMemory(to: CChar.self)) }
    }

    /// Memory in bytes (`nvmlDeviceGetMemoryInfo`).
    public func memory() throws(NVMLError) -> (total: UInt64, used: UInt64, free: UInt64) {
        guard let getMemory = api.deviceGetMemoryInfo else { throw api.missing("nvmlDeviceGetMemoryInfo") }
        var memory = nvmlMemory_t()
        try library.check(NVMLReturn(getMemory(handle, &memory)), "nvmlDeviceGetMemoryInfo")
        return (UInt64(memory.total), UInt64(memory.used), UInt64(memory.free))
    }

    /// The die temperature in °C (`nvmlDeviceGetTemperature`, `NVML_TEMPERATURE_GPU`).
    public func temperatureCelsius() throws(NVMLError) -> Int {
        guard let getTemperature = api.deviceGetTemperature else { throw api.missing("nvmlDeviceGetTemperature") }
        var value: UInt32 = 0
        try library.check(NVMLReturn(getTemperature(handle, NVML_TEMPERATURE_GPU, &value)), "nvmlDeviceGetTemperature")
        return Int(value)
    }

    /// Power draw in milliwatts (`nvmlDeviceGetPowerUsage`).
    public func powerMilliwatts() throws(NVMLError) -> Int {
        guard let getPower = api.deviceGetPowerUsage else { throw api.missing("nvmlDeviceGetPowerUsage") }
        var value: UInt32 = 0
        try library.check(NVMLReturn(getPower(handle, &value)), "nvmlDeviceGetPowerUsage")
        return Int(value)
    }

    /// GPU and memory utilisation in percent (`nvmlDeviceGetUtilizationRates`).
    public func utilization() throws(NVMLError) -> (gpu: Int, memory: Int) {
        guard let getUtilization = api.deviceGetUtilizationRates else {
            throw api.missing("nvmlDeviceGetUtilizationRates")
        }
        var value = nvmlUtilization_t()
        try library.check(NVMLReturn(getUtilization(handle, &value)), "nvmlDeviceGetUtilizationRates")
        return (Int(value.gpu), Int(value.memory))
    }

    /// ECC error counts since the driver loaded (`volatile`) or over the device's lifetime
    /// (`nvmlDeviceGetTotalEccErrors`). `NVML_ERROR_NOT_SUPPORTED` where ECC is off or absent.
    public func eccErrors(aggregate: Bool = false) throws(NVMLError) -> (corrected: UInt64, uncorrected: UInt64) {
        guard let getEcc = api.deviceGetTotalEccErrors else { throw api.missing("nvmlDeviceGetTotalEccErrors") }
        let counter = aggregate ? NVML_AGGREGATE_ECC : NVML_VOLATILE_ECC
        var corrected: UInt64 = 0
        var uncorrected: UInt64 = 0
        try library.check(
            NVMLReturn(getEcc(handle, NVML_MEMORY_ERROR_TYPE_CORRECTED, counter, &corrected)),
            "nvmlDeviceGetTotalEccErrors")
        try library.check(
            NVMLReturn(getEcc(handle, NVML_MEMORY_ERROR_TYPE_UNCORRECTED, counter, &uncorrected)),
            "nvmlDeviceGetTotalEccErrors")
        return (corrected, uncorrected)
    }

    /// The event types this device can report (`nvmlDeviceGetSupportedEventTypes`).
    public func supportedEventTypes() throws(NVMLError) -> NVMLEventTypes {
        guard let getSupported = api.deviceGetSupportedEventTypes else {
            throw api.missing("nvmlDeviceGetSupportedEventTypes")
        }
        var value: UInt64 = 0
        try library.check(NVMLReturn(getSupported(handle, &value)), "nvmlDeviceGetSupportedEventTypes")
        return NVMLEventTypes(rawValue: value)
    }

    /// Everything the agent reports about this GPU. The UUID, name and total memory must be
    /// readable; telemetry NVML does not offer here is left `nil`.
    ///
    /// - Throws: the first failure of an essential query, or any `NVML_ERROR_GPU_IS_LOST`.
    public func reading() throws(NVMLError) -> GPUReading {
        let memory = try memory()
        var reading = GPUReading(
            index: index, uuid: try uuid(), name: try name(),
            memoryTotalMiB: Int(memory.total / (1024 * 1024)))
        reading.memoryUsedMiB = Int(memory.used / (1024 * 1024))
        reading.pciBusID = try optional { () throws(NVMLError) in try pciBusID() }
        reading.temperatureC = try optional { () throws(NVMLError) in try temperatureCelsius() }
        reading.powerMilliwatts = try optional { () throws(NVMLError) in try powerMilliwatts() }
        if let utilization = try optional({ () throws(NVMLError) in try utilization() }) {
            reading.utilizationPercent = utilization.gpu
            reading.memoryUtilizationPercent = utilization.memory
        }
        if let ecc = try optional({ () throws(NVMLError) in try eccErrors() }) {
            reading.eccCorrected = ecc.corrected
            reading.eccUncorrected = ecc.uncorrected
        }
        return reading
    }

    /// `nil` when the query is unsupported or fails, except that a lost GPU still throws.
    private func optional<T>(_ body: () throws(NVMLError) -> T) throws(NVMLError) -> T? {
        do {
            return try body()
        } catch where error.isGPULost {
            throw error
        } catch {
            return nil
        }
    }
}

/// What the agent reads from one GPU: identity, memory, telemetry and ECC counters.
public struct GPUReading: Sendable, Hashable, Codable {
    /// The NVML index.
    public var index: Int
    /// The UUID, `GPU-…`.
    public var uuid: String
    /// The product name.
    public var name: String
    /// The PCI bus id.
    public var pciBusID: String?
    /// Total memory in MiB.
    public var memoryTotalMiB: Int
    /// Memory in use in MiB.
    public var memoryUsedMiB: Int?
    /// Die temperature in °C.
    public var temperatureC: Int?
    /// Power draw in mW.
    public var powerMilliwatts: Int?
    /// GPU utilisation in percent.
    public var utilizationPercent: Int?
    /// Memory-controller utilisation in percent.
    public var memoryUtilizationPercent: Int?
    /// Corrected (single-bit) ECC errors since the driver loaded; `nil` without ECC.
    public var eccCorrected: UInt64?
    /// Uncorrected (double-bit) ECC errors since the driver loaded; `nil` without ECC.
    public var eccUncorrected: UInt64?

    /// Makes a reading.
    public init(
        index: Int, uuid: String, name: String, pciBusID: String? = nil, memoryTotalMiB: Int,
        memoryUsedMiB: Int? = nil, temperatureC: Int? = nil, powerMilliwatts: Int? = nil,
        utilizationPercent: Int? = nil, memoryUtilizationPercent: Int? = nil,
        eccCorrected: UInt64? = nil, eccUncorrected: UInt64? = nil
    ) {
        self.index = index
        self.uuid = uuid
        self.name = name
        self.pciBusID = pciBusID
        self.memoryTotalMiB = memoryTotalMiB
        self.memoryUsedMiB = memoryUsedMiB
        self.temperatureC = temperatureC
        self.powerMilliwatts = powerMilliwatts
        self.utilizationPercent = utilizationPercent
        self.memoryUtilizationPercent = memoryUtilizationPercent
        self.eccCorrected = eccCorrected
        self.eccUncorrected = eccUncorrected
    }

    /// The GPU as a node reports it.
    public var device: GPUDevice {
        GPUDevice(index: index, uuid: uuid, product: name, memoryMiB: memoryTotalMiB, pciBusID: pciBusID)
    }

    /// This reading's telemetry with a verdict.
    public func health(healthy: Bool, reason: String? = nil) -> GPUHealth {
        GPUHealth(
            uuid: uuid, healthy: healthy, reason: reason, memoryUsedMiB: memoryUsedMiB,
            temperatureC: temperatureC,
            powerW: powerMilliwatts.map { Int((Double($0) / 1000).rounded()) },
            utilizationPercent: utilizationPercent)
    }
}
