internal import CNVML
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

#if canImport(Glibc)
import Glibc
#endif

/// NVML, loaded at run time with `dlopen` and initialised.
///
/// Nothing links against `libnvidia-ml`: every symbol is resolved with `dlsym`, preferring the
/// versioned entry points (`nvmlInit_v2`, `nvmlDeviceGetCount_v2`,
/// `nvmlDeviceGetHandleByIndex_v2`, `nvmlDeviceGetPciInfo_v3`, `nvmlEventSetWait_v2`) and falling
/// back to the older names where NVML has both. The same code loads NVIDIA's library or the
/// package's `libFakeNVML.so`.
///
/// NVML is thread-safe, and so is this type. Its calls block (for milliseconds, or far longer
/// on a troubled GPU): make them from a dedicated thread (``GPUHealthMonitor`` does, and
/// ``GPUInventory/discover(libraryPath:)-async`` does), never from Swift's cooperative pool.
///
/// Deinitialising calls `nvmlShutdown` and closes the library.
public final class NVMLLibrary: @unchecked Sendable {
    /// The library loaded when nothing else is configured.
    public static let defaultPath = "libnvidia-ml.so.1"
    /// The environment variable naming another library (for example the fake).
    public static let pathEnvironmentKey = "GPUPLANE_NVML_LIBRARY"

    /// The library to load: `GPUPLANE_NVML_LIBRARY` when set and not empty, else
    /// ``defaultPath``.
    public static func configuredPath(
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> String {
        if let path = environment[pathEnvironmentKey], !path.isEmpty { return path }
        return defaultPath
    }

    /// The path or name given to `dlopen`.
    public let path: String
    private let handle: UnsafeMutableRawPointer
    let api: API

    /// Opens the library at `path` (default: ``configuredPath(environment:)``) and initialises
    /// NVML.
    ///
    /// - Throws: ``NVMLError/Code/libraryNotLoaded`` when `dlopen` fails,
    ///   ``NVMLError/Code/symbolNotFound`` when a required symbol is missing, and
    ///   ``NVMLError/Code/callFailed`` when `nvmlInit` fails (no driver, version mismatch).
    public init(path: String? = nil) throws(NVMLError) {
        let path = path ?? Self.configuredPath()
        dlerror()
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            let reason = dlerror().map { String(cString: $0) } ?? "unknown dlopen error"
            throw NVMLError(code: .libraryNotLoaded, function: "dlopen", message: reason)
        }
        let api: API
        do {
            api = try API(handle: handle)
        } catch {
            dlclose(handle)
            throw error
        }
        let result = api.initialize()
        guard result == .success else {
            let message = api.errorString(result)
            dlclose(handle)
            throw NVMLError(code: .callFailed, result: result, function: "nvmlInit_v2", message: message)
        }
        self.path = path
        self.handle = handle
        self.api = api
    }

    deinit {
        _ = api.shutdown()
        dlclose(handle)
    }

    /// Throws when `result` is not success, with NVML's own words for it.
    func check(_ result: NVMLReturn, _ function: String) throws(NVMLError) {
        guard result != .success else { return }
        throw NVMLError(code: .callFailed, result: result, function: function, message: api.errorString(result))
    }

    /// The driver version (`nvmlSystemGetDriverVersion`).
    public func driverVersion() throws(NVMLError) -> String {
        guard let getVersion = api.systemGetDriverVersion else { throw api.missing("nvmlSystemGetDriverVersion") }
        return try readString("nvmlSystemGetDriverVersion", capacity: Int(NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE)) {
            getVersion($0, $1)
        }
    }

    /// How many GPUs NVML sees (`nvmlDeviceGetCount_v2`).
    public func deviceCount() throws(NVMLError) -> Int {
        var count: UInt32 = 0
        try check(NVMLReturn(api.deviceGetCount(&count)), api.deviceGetCountName)
        return Int(count)
    }

    /// The GPU at `index` (`nvmlDeviceGetHandleByIndex_v2`).
    public func device(at index: Int) throws(NVMLError) -> NVMLDevice {
        guard index >= 0, index <= Int(UInt32.max) else {
            throw NVMLError(
                code: .callFailed, result: .invalidArgument, function: api.deviceGetHandleByIndexName,
                message: "index \(index) is out of range")
        }
        var device: nvmlDevice_t?
        try check(NVMLReturn(api.deviceGetHandleByIndex(UInt32(index), &device)), api.deviceGetHandleByIndexName)
        guard let device else {
            throw NVMLError(
                code: .callFailed, result: .unknown, function: api.deviceGetHandleByIndexName,
                message: "NVML returned success and no handle")
        }
        return NVMLDevice(library: self, index: index, handle: device)
    }

    /// Every GPU, in index order.
    public func devices() throws(NVMLError) -> [NVMLDevice] {
        var devices: [NVMLDevice] = []
        for index in 0..<(try deviceCount()) {
            devices.append(try device(at: index))
        }
        return devices
    }

    /// Whether the library offers the event API (`nvmlEventSetCreate`, `nvmlEventSetWait_v2`…).
    public var supportsEvents: Bool {
        api.eventSetCreate != nil && api.eventSetWait != nil && api.eventSetFree != nil
            && api.deviceRegisterEvents != nil
    }

    /// Calls `body` with a zeroed C buffer of `capacity` bytes and decodes the NUL-terminated
    /// string NVML wrote into it.
    func readString(
        _ function: String, capacity: Int, _ body: (UnsafeMutablePointer<CChar>, UInt32) -> nvmlReturn_t
    ) throws(NVMLError) -> String {
        var buffer = [CChar](repeating: 0, count: capacity + 1)
        let result = buffer.withUnsafeMutableBufferPointer { pointer -> nvmlReturn_t in
            // The last byte stays NUL whatever the library does.
            guard let base = pointer.baseAddress else { return NVML_ERROR_INSUFFICIENT_SIZE }
            return body(base, UInt32(capacity))
        }
        try check(NVMLReturn(result), function)
        return decodeCString(buffer)
    }
}

/// Decodes a NUL-terminated C character array as UTF-8.
func decodeCString<C: Collection>(_ characters: C) -> String where C.Element == CChar {
    String(decoding: characters.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

extension NVMLLibrary {
    /// The function pointers resolved from the library.
    struct API {
        let initialize: () -> NVMLReturn
        let shutdown: CNVMLShutdownFn
        let errorStringFn: CNVMLErrorStringFn?
        let systemGetDriverVersion: CNVMLSystemGetDriverVersionFn?
        let deviceGetCount: CNVMLDeviceGetCountFn
        let deviceGetCountName: String
        let deviceGetHandleByIndex: CNVMLDeviceGetHandleByIndexFn
        let deviceGetHandleByIndexName: String
        let deviceGetIndex: CNVMLDeviceGetIndexFn?
        let deviceGetUUID: CNVMLDeviceGetStringFn
        let deviceGetName: CNVMLDeviceGetStringFn?
        let deviceGetPciInfo: CNVMLDeviceGetPciInfoFn?
        /// Whether the PCI symbol is `_v3`, whose `busId` holds the 8-digit-domain id. Older
        /// symbols fill a prefix-compatible structure whose first 16 bytes are the bus id.
        let pciInfoIsV3: Bool
        let deviceGetMemoryInfo: CNVMLDeviceGetMemoryInfoFn?
        let deviceGetTemperature: CNVMLDeviceGetTemperatureFn?
        let deviceGetPowerUsage: CNVMLDeviceGetPowerUsageFn?
        let deviceGetUtilizationRates: CNVMLDeviceGetUtilizationRatesFn?
        let deviceGetTotalEccErrors: CNVMLDeviceGetTotalEccErrorsFn?
        let eventSetCreate: CNVMLEventSetCreateFn?
        let deviceRegisterEvents: CNVMLDeviceRegisterEventsFn?
        let deviceGetSupportedEventTypes: CNVMLDeviceGetSupportedEventTypesFn?
        let eventSetWait: CNVMLEventSetWaitFn?
        let eventSetWaitName: String
        let eventSetFree: CNVMLEventSetFreeFn?

        init(handle: UnsafeMutableRawPointer) throws(NVMLError) {
            /// The first of `names` the library exports, with the name found.
            func find<T>(_ names: [String], as type: T.Type) -> (T, String)? {
                for name in names {
                    if let symbol = dlsym(handle, name) { return (unsafeBitCast(symbol, to: type), name) }
                }
                return nil
            }
            func require<T>(_ names: [String], as type: T.Type) throws(NVMLError) -> (T, String) {
                guard let found = find(names, as: type) else {
                    throw NVMLError(
                        code: .symbolNotFound, function: names[0],
                        message: "the library exports none of \(names.joined(separator: ", "))")
                }
                return found
            }

            if let (initV2, _) = find(["nvmlInit_v2"], as: CNVMLInitFn.self) {
                initialize = { NVMLReturn(initV2()) }
            } else if let (withFlags, _) = find(["nvmlInitWithFlags"], as: CNVMLInitWithFlagsFn.self) {
                initialize = { NVMLReturn(withFlags(0)) }
            } else {
                let (initV1, _) = try require(["nvmlInit"], as: CNVMLInitFn.self)
                initialize = { NVMLReturn(initV1()) }
            }
            shutdown = try require(["nvmlShutdown"], as: CNVMLShutdownFn.self).0
            errorStringFn = find(["nvmlErrorString"], as: CNVMLErrorStringFn.self)?.0
            systemGetDriverVersion = find(["nvmlSystemGetDriverVersion"], as: CNVMLSystemGetDriverVersionFn.self)?.0
            (deviceGetCount, deviceGetCountName) = try require(
                ["nvmlDeviceGetCount_v2", "nvmlDeviceGetCount"], as: CNVMLDeviceGetCountFn.self)
            (deviceGetHandleByIndex, deviceGetHandleByIndexName) = try require(
                ["nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByIndex"],
                as: CNVMLDeviceGetHandleByIndexFn.self)
            deviceGetIndex = find(["nvmlDeviceGetIndex"], as: CNVMLDeviceGetIndexFn.self)?.0
            deviceGetUUID = try require(["nvmlDeviceGetUUID"], as: CNVMLDeviceGetStringFn.self).0
            deviceGetName = find(["nvmlDeviceGetName"], as: CNVMLDeviceGetStringFn.self)?.0
            let pci = find(
                ["nvmlDeviceGetPciInfo_v3", "nvmlDeviceGetPciInfo_v2", "nvmlDeviceGetPciInfo"],
                as: CNVMLDeviceGetPciInfoFn.self)
            deviceGetPciInfo = pci?.0
            pciInfoIsV3 = pci?.1 == "nvmlDeviceGetPciInfo_v3"
            deviceGetMemoryInfo = find(["nvmlDeviceGetMemoryInfo"], as: CNVMLDeviceGetMemoryInfoFn.self)?.0
            deviceGetTemperature = find(["nvmlDeviceGetTemperature"], as: CNVMLDeviceGetTemperatureFn.self)?.0
            deviceGetPowerUsage = find(["nvmlDeviceGetPowerUsage"], as: CNVMLDeviceGetPowerUsageFn.self)?.0
            deviceGetUtilizationRates = find(
                ["nvmlDeviceGetUtilizationRates"], as: CNVMLDeviceGetUtilizationRatesFn.self)?.0
            deviceGetTotalEccErrors = find(
                ["nvmlDeviceGetTotalEccErrors"], as: CNVMLDeviceGetTotalEccErrorsFn.self)?.0
            eventSetCreate = find(["nvmlEventSetCreate"], as: CNVMLEventSetCreateFn.self)?.0
            deviceRegisterEvents = find(["nvmlDeviceRegisterEvents"], as: CNVMLDeviceRegisterEventsFn.self)?.0
            deviceGetSupportedEventTypes = find(
                ["nvmlDeviceGetSupportedEventTypes"], as: CNVMLDeviceGetSupportedEventTypesFn.self)?.0
            let wait = find(["nvmlEventSetWait_v2", "nvmlEventSetWait"], as: CNVMLEventSetWaitFn.self)
            eventSetWait = wait?.0
            eventSetWaitName = wait?.1 ?? "nvmlEventSetWait_v2"
            eventSetFree = find(["nvmlEventSetFree"], as: CNVMLEventSetFreeFn.self)?.0
        }

        /// NVML's words for `result`.
        func errorString(_ result: NVMLReturn) -> String {
            if let errorStringFn, let text = errorStringFn(nvmlReturn_t(rawValue: result.rawValue)) {
                return String(cString: text)
            }
            return result.description
        }

        /// The error for an optional symbol the library does not export.
        func missing(_ function: String) -> NVMLError {
            NVMLError(
                code: .callFailed, result: .functionNotFound, function: function,
                message: "the loaded NVML library does not export \(function)")
        }
    }
}
