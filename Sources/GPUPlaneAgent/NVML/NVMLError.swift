internal import CNVML

/// A return code of an NVML call (`nvmlReturn_t`), kept as its number so codes added by newer
/// drivers pass through unchanged.
public struct NVMLReturn: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The `nvmlReturn_t` value.
    public let rawValue: UInt32

    /// Wraps an `nvmlReturn_t` value.
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    init(_ value: nvmlReturn_t) { self.rawValue = value.rawValue }

    /// `NVML_SUCCESS`.
    public static let success = NVMLReturn(rawValue: NVML_SUCCESS.rawValue)
    /// `NVML_ERROR_UNINITIALIZED`.
    public static let uninitialized = NVMLReturn(rawValue: NVML_ERROR_UNINITIALIZED.rawValue)
    /// `NVML_ERROR_INVALID_ARGUMENT`.
    public static let invalidArgument = NVMLReturn(rawValue: NVML_ERROR_INVALID_ARGUMENT.rawValue)
    /// `NVML_ERROR_NOT_SUPPORTED`: the device or platform does not offer this query.
    public static let notSupported = NVMLReturn(rawValue: NVML_ERROR_NOT_SUPPORTED.rawValue)
    /// `NVML_ERROR_NO_PERMISSION`.
    public static let noPermission = NVMLReturn(rawValue: NVML_ERROR_NO_PERMISSION.rawValue)
    /// `NVML_ERROR_NOT_FOUND`.
    public static let notFound = NVMLReturn(rawValue: NVML_ERROR_NOT_FOUND.rawValue)
    /// `NVML_ERROR_INSUFFICIENT_SIZE`.
    public static let insufficientSize = NVMLReturn(rawValue: NVML_ERROR_INSUFFICIENT_SIZE.rawValue)
    /// `NVML_ERROR_DRIVER_NOT_LOADED`: no NVIDIA kernel driver.
    public static let driverNotLoaded = NVMLReturn(rawValue: NVML_ERROR_DRIVER_NOT_LOADED.rawValue)
    /// `NVML_ERROR_TIMEOUT`: an event wait ended with no event.
    public static let timeout = NVMLReturn(rawValue: NVML_ERROR_TIMEOUT.rawValue)
    /// `NVML_ERROR_LIBRARY_NOT_FOUND`.
    public static let libraryNotFound = NVMLReturn(rawValue: NVML_ERROR_LIBRARY_NOT_FOUND.rawValue)
    /// `NVML_ERROR_FUNCTION_NOT_FOUND`: the loaded library lacks the symbol (also what this
    /// binding answers for optional symbols it could not resolve).
    public static let functionNotFound = NVMLReturn(rawValue: NVML_ERROR_FUNCTION_NOT_FOUND.rawValue)
    /// `NVML_ERROR_GPU_IS_LOST`: the GPU fell off the bus or is otherwise inaccessible.
    public static let gpuIsLost = NVMLReturn(rawValue: NVML_ERROR_GPU_IS_LOST.rawValue)
    /// `NVML_ERROR_RESET_REQUIRED`.
    public static let resetRequired = NVMLReturn(rawValue: NVML_ERROR_RESET_REQUIRED.rawValue)
    /// `NVML_ERROR_LIB_RM_VERSION_MISMATCH`: library and kernel driver versions differ.
    public static let libRMVersionMismatch = NVMLReturn(
        rawValue: NVML_ERROR_LIB_RM_VERSION_MISMATCH.rawValue)
    /// `NVML_ERROR_UNKNOWN`.
    public static let unknown = NVMLReturn(rawValue: NVML_ERROR_UNKNOWN.rawValue)

    /// The C name, e.g. `NVML_ERROR_GPU_IS_LOST`.
    public var description: String {
        switch self {
        case .success: "NVML_SUCCESS"
        case .uninitialized: "NVML_ERROR_UNINITIALIZED"
        case .invalidArgument: "NVML_ERROR_INVALID_ARGUMENT"
        case .notSupported: "NVML_ERROR_NOT_SUPPORTED"
        case .noPermission: "NVML_ERROR_NO_PERMISSION"
        case .notFound: "NVML_ERROR_NOT_FOUND"
        case .insufficientSize: "NVML_ERROR_INSUFFICIENT_SIZE"
        case .driverNotLoaded: "NVML_ERROR_DRIVER_NOT_LOADED"
        case .timeout: "NVML_ERROR_TIMEOUT"
        case .libraryNotFound: "NVML_ERROR_LIBRARY_NOT_FOUND"
        case .functionNotFound: "NVML_ERROR_FUNCTION_NOT_FOUND"
        case .gpuIsLost: "NVML_ERROR_GPU_IS_LOST"
        case .resetRequired: "NVML_ERROR_RESET_REQUIRED"
        case .libRMVersionMismatch: "NVML_ERROR_LIB_RM_VERSION_MISMATCH"
        case .unknown: "NVML_ERROR_UNKNOWN"
        default: "nvmlReturn_t(\(rawValue))"
        }
    }
}

/// Why talking to NVML failed. Decide on ``code`` and ``result``, never on the message.
public struct NVMLError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of failure.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: String, Hashable, Sendable {
            case libraryNotLoaded, symbolNotFound, callFailed
        }
        private let value: Value
        private init(_ value: Value) { self.value = value }

        /// The shared library could not be opened (no driver installed, wrong path).
        public static let libraryNotLoaded = Code(.libraryNotLoaded)
        /// The library lacks a symbol the binding cannot work without.
        public static let symbolNotFound = Code(.symbolNotFound)
        /// An NVML call returned something other than success; see ``NVMLError/result``.
        public static let callFailed = Code(.callFailed)

        /// The code's name, stable enough for a metric label.
        public var description: String { value.rawValue }
    }

    /// What kind of failure.
    public let code: Code
    /// For ``Code/callFailed``, what NVML returned.
    public let result: NVMLReturn?
    /// The NVML function involved, when there is one.
    public let function: String?
    /// Words for a person (from dlerror or nvmlErrorString).
    public let message: String

    /// Makes an error.
    public init(code: Code, result: NVMLReturn? = nil, function: String? = nil, message: String) {
        self.code = code
        self.result = result
        self.function = function
        self.message = message
    }

    /// Whether NVML said the GPU is lost (fell off the bus).
    public var isGPULost: Bool { result == .gpuIsLost }

    /// Whether NVML said the query is not supported on this device.
    public var isNotSupported: Bool { result == .notSupported || result == .functionNotFound }

    /// The code, function, NVML's code and message in one line.
    public var description: String {
        var text = "NVML \(code)"
        if let function { text += " in \(function)" }
        if let result { text += " (\(result))" }
        return text + ": " + message
    }
}
