#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import GPUPlaneSystem

/// The GPUs of this host as NVML reports them, or why there are none.
public struct GPUInventory: Sendable, Hashable {
    /// Every GPU that could be read, in index order.
    public var gpus: [GPUReading]
    /// The NVIDIA driver version, when known.
    public var driverVersion: String?
    /// Why NVML could not be used at all (no library, no driver); `nil` when it answered.
    public var unavailableReason: String?
    /// GPUs NVML counts but that could not be read, with why.
    public var problems: [String]

    /// Makes an inventory.
    public init(
        gpus: [GPUReading], driverVersion: String? = nil, unavailableReason: String? = nil,
        problems: [String] = []
    ) {
        self.gpus = gpus
        self.driverVersion = driverVersion
        self.unavailableReason = unavailableReason
        self.problems = problems
    }

    /// An inventory with no GPUs and the reason.
    public static func unavailable(_ reason: String) -> GPUInventory {
        GPUInventory(gpus: [], unavailableReason: reason)
    }

    /// The GPUs as a node reports them.
    public var devices: [GPUDevice] { gpus.map(\.device) }

    /// Healthy records carrying each GPU's telemetry.
    public var health: [GPUHealth] { gpus.map { $0.health(healthy: true) } }

    /// The machine type of this host: the type matching its first GPU's product and memory
    /// (hosts carry one GPU model). `nil` without GPUs or for an unknown product.
    public func machineType(in table: MachineTypeTable = .standard) -> MachineType? {
        guard let first = gpus.first else { return nil }
        return table.matching(product: first.name, memoryMiB: first.memoryTotalMiB)
    }

    /// Reads every GPU of an initialised library. Blocks: call from a dedicated thread.
    public static func read(from library: NVMLLibrary) -> GPUInventory {
        let count: Int
        do {
            count = try library.deviceCount()
        } catch {
            return .unavailable("NVML could not count GPUs: \(error)")
        }
        var inventory = GPUInventory(gpus: [], driverVersion: try? library.driverVersion())
        for index in 0..<count {
            do {
                inventory.gpus.append(try library.device(at: index).reading())
            } catch {
                inventory.problems.append("GPU \(index): \(error)")
            }
        }
        return inventory
    }

    /// Loads NVML from `libraryPath` (default: ``NVMLLibrary/configuredPath(environment:)``)
    /// and reads every GPU. Never throws: a host without the library or the driver reports zero
    /// GPUs and ``unavailableReason``. Blocks: call from a dedicated thread, or use the async
    /// variant.
    public static func discover(libraryPath: String? = nil) -> GPUInventory {
        do {
            let library = try NVMLLibrary(path: libraryPath)
            return read(from: library)
        } catch {
            let path = libraryPath ?? NVMLLibrary.configuredPath()
            switch error.code {
            case .libraryNotLoaded:
                return .unavailable("NVML library \(path) could not be loaded: \(error.message)")
            case .symbolNotFound:
                return .unavailable("\(path) is not a usable NVML library: \(error.message)")
            default:
                return .unavailable("NVML in \(path) failed to initialise: \(error)")
            }
        }
    }

    /// ``discover(libraryPath:)-swift.type.method`` on a dedicated thread, leaving Swift's
    /// cooperative pool free.
    public static func discover(libraryPath: String? = nil) async -> GPUInventory {
        await BlockingCall.run(name: "gpuplane-nvml-inventory") { discover(libraryPath: libraryPath) }
    }
}

/// Runs blocking C calls on a thread of their own.
enum BlockingCall {
    /// Runs `body` on a new thread and returns its result without occupying a cooperative
    /// thread while it blocks.
    static func run<T: Sendable>(name: String, _ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            SystemThread.start(name: name) { continuation.resume(returning: body()) }
        }
    }
}
