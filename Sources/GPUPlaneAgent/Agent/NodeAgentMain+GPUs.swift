#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import GPUPlaneCore

extension NodeAgentMain {
    /// `gpuplane-node-agent gpus [--nvml-library PATH]`: what this host's NVML reports, as the
    /// agent reads it when it starts: the driver, each GPU (index, UUID, name, PCI bus, memory,
    /// temperature, power, utilisation, ECC counters), the machine type the GPUs match, whether
    /// NVML delivers the health events (XID, ECC) the agent watches, and any GPU it could not
    /// read. Exits 0 when NVML answered with at least one GPU, 1 otherwise (saying why).
    /// Registers nothing and needs no api-server: for checking a GPU host before installing.
    public static func gpusCommand(_ arguments: [String]) async -> Int32 {
        var libraryPath: String?
        var rest = arguments[...]
        while let argument = rest.popFirst() {
            switch argument {
            case "--nvml-library":
                guard let value = rest.popFirst() else { return usage("--nvml-library needs a path") }
                libraryPath = value
            case "-h", "--help":
                print("usage: gpuplane-node-agent gpus [--nvml-library PATH]\n\nPrints the GPUs NVML reports on this host, as the node-agent reads them, and exits 0 when there is at least one.")
                return 0
            default:
                return usage("unknown argument '\(argument)'")
            }
        }
        let path = libraryPath
        let (inventory, events) = await BlockingCall.run(name: "gpuplane-nvml-gpus") { () -> (GPUInventory, String) in
            do {
                let library = try NVMLLibrary(path: path)
                return (GPUInventory.read(from: library), eventSupport(library))
            } catch {
                return (GPUInventory.discover(libraryPath: path), "-")
            }
        }
        if let reason = inventory.unavailableReason {
            printError("NVML: \(reason)")
            return 1
        }
        print("driver \(inventory.driverVersion ?? "unknown"); \(inventory.gpus.count) GPU(s); machine type \(inventory.machineType()?.name ?? "none of the table's"); health events: \(events)")
        print("INDEX  UUID                                      NAME                            PCI               MEMORY MiB    TEMP  POWER W  UTIL  ECC corrected/uncorrected")
        for gpu in inventory.gpus {
            let memory = "\(gpu.memoryUsedMiB.map(String.init) ?? "?")/\(gpu.memoryTotalMiB)"
            let ecc = "\(gpu.eccCorrected.map(String.init) ?? "-")/\(gpu.eccUncorrected.map(String.init) ?? "-")"
            print([
                pad("\(gpu.index)", 6), pad(gpu.uuid, 41), pad(gpu.name, 31), pad(gpu.pciBusID ?? "-", 17), pad(memory, 13),
                pad(gpu.temperatureC.map { "\($0)C" } ?? "-", 5), pad(gpu.powerMilliwatts.map { "\($0 / 1000)" } ?? "-", 8),
                pad(gpu.utilizationPercent.map { "\($0)%" } ?? "-", 5), ecc,
            ].joined(separator: " "))
        }
        for problem in inventory.problems { printError("problem: \(problem)") }
        return inventory.gpus.isEmpty ? 1 : 0
    }

    /// Whether NVML's event API takes the XID and ECC events of every GPU: "XID+ECC on all",
    /// "XID only on n" or why not.
    static func eventSupport(_ library: NVMLLibrary) -> String {
        guard library.supportsEvents else { return "none (NVML offers no event API: health is polled)" }
        let set: NVMLEventSet
        do { set = try NVMLEventSet(library: library) } catch { return "none (\(error))" }
        guard let count = try? library.deviceCount() else { return "-" }
        var kinds: [String] = []
        for index in 0..<count {
            guard let device = try? library.device(at: index) else { continue }
            switch try? set.registerHealthEvents(device) {
            case .health?: kinds.append("XID+ECC")
            case let types? where types.contains(.xidCriticalError): kinds.append("XID")
            case let types? where !types.isEmpty: kinds.append("ECC")
            default: kinds.append("none")
            }
        }
        return kinds.enumerated().map { "GPU \($0.offset): \($0.element)" }.joined(separator: ", ")
    }

    private static func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
    }

    private static func usage(_ message: String) -> Int32 {
        printError("gpuplane-node-agent gpus: \(message)\nusage: gpuplane-node-agent gpus [--nvml-library PATH]")
        return 2
    }

    private static func printError(_ text: String) {
        let line = Array((text + "\n").utf8)
        _ = line.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
    }
}
