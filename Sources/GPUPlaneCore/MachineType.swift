/// A machine type of `reference/machine-types.txt`: the unit a pod asks for and a node offers.
public struct MachineType: Codable, Sendable, Hashable {
    /// Whether the type carries GPUs.
    public enum Family: String, Codable, Sendable { case cpu, gpu }

    /// The name users write, e.g. `GPU-H100` or `M`.
    public var name: String
    /// CPU or GPU.
    public var family: Family
    /// VRAM of one GPU in GB (0 for CPU types).
    public var vramGB: Int
    /// Host memory in MB.
    public var ramMB: Int
    /// CPU cores, in thousandths (0.5 cores = 500).
    public var cpuMilli: Int
    /// Memory bandwidth of the GPU in GB/s (0 for CPU types).
    public var bandwidthGBps: Int
    /// Hardware video encoders and decoders (nil where the table shows "—").
    public var videoEncoders: Int?
    /// Hardware video decoders.
    public var videoDecoders: Int?
    /// Whether the encoders do AV1.
    public var av1: Bool
    /// NVML product names that identify this type on a host (matched case-insensitively, as substrings).
    public var productNames: [String]
    /// Other names accepted for this type (e.g. `H100-80GB` in deployment requests).
    public var aliases: [String]

    /// Makes a machine type.
    public init(
        name: String, family: Family, vramGB: Int, ramMB: Int, cpuMilli: Int,
        bandwidthGBps: Int = 0, videoEncoders: Int? = nil, videoDecoders: Int? = nil,
        av1: Bool = false, productNames: [String] = [], aliases: [String] = []
    ) {
        self.name = name
        self.family = family
        self.vramGB = vramGB
        self.ramMB = ramMB
        self.cpuMilli = cpuMilli
        self.bandwidthGBps = bandwidthGBps
        self.videoEncoders = videoEncoders
        self.videoDecoders = videoDecoders
        self.av1 = av1
        self.productNames = productNames
        self.aliases = aliases
    }
}

/// The machine-type table: every type of `reference/machine-types.txt`, plus the two GPU
/// classes the other reference documents name (the 96 GB RTX PRO 6000 of Modes 1 and 2, and the
/// A100-80GB of custom deployments).
public struct MachineTypeTable: Sendable {
    /// All types, CPU first, then GPUs from the smallest VRAM to the largest.
    public let types: [MachineType]
    /// Lowercased name or alias → position in ``types``: names first, then aliases, each the
    /// first type in order that has it (what ``named(_:)`` answers).
    private let positions: [String: Int]

    /// Makes a table from `types` (sorted by VRAM for smallest-fit choices).
    public init(_ types: [MachineType]) {
        let sorted = types.sorted {
            ($0.family == .cpu ? 0 : 1, $0.vramGB, $0.ramMB) < ($1.family == .cpu ? 0 : 1, $1.vramGB, $1.ramMB)
        }
        var positions: [String: Int] = [:]
        for (position, type) in sorted.enumerated() where positions[type.name.lowercased()] == nil {
            positions[type.name.lowercased()] = position
        }
        for (position, type) in sorted.enumerated() {
            for alias in type.aliases where positions[alias.lowercased()] == nil { positions[alias.lowercased()] = position }
        }
        self.types = sorted
        self.positions = positions
    }

    /// The table shipped with gpuplane.
    public static let standard = MachineTypeTable([
        MachineType(name: "XS", family: .cpu, vramGB: 0, ramMB: 512, cpuMilli: 500),
        MachineType(name: "S", family: .cpu, vramGB: 0, ramMB: 1024, cpuMilli: 1000),
        MachineType(name: "M", family: .cpu, vramGB: 0, ramMB: 2048, cpuMilli: 2000),
        MachineType(name: "L", family: .cpu, vramGB: 0, ramMB: 15 * 1024, cpuMilli: 4000),
        MachineType(name: "XL", family: .cpu, vramGB: 0, ramMB: 30 * 1024, cpuMilli: 8000),
        MachineType(
            name: "GPU-RTX4090", family: .gpu, vramGB: 24, ramMB: 48 * 1024, cpuMilli: 12000,
            bandwidthGBps: 1000, videoEncoders: 2, videoDecoders: 2,
            productNames: ["RTX 4090"], aliases: ["RTX4090"]),
        MachineType(
            name: "GPU-RTX5090", family: .gpu, vramGB: 32, ramMB: 60 * 1024, cpuMilli: 14000,
            bandwidthGBps: 1800, videoEncoders: 3, videoDecoders: 3, av1: true,
            productNames: ["RTX 5090"], aliases: ["RTX5090"]),
        MachineType(
            name: "GPU-A100", family: .gpu, vramGB: 40, ramMB: 60 * 1024, cpuMilli: 12000,
            bandwidthGBps: 2000, videoEncoders: nil, videoDecoders: 5,
            productNames: ["A100-SXM4-40GB", "A100-PCIE-40GB", "A100 40GB"], aliases: ["A100-40GB"]),
        MachineType(
            name: "GPU-L40", family: .gpu, vramGB: 48, ramMB: 100 * 1024, cpuMilli: 6000,
            bandwidthGBps: 900, videoEncoders: 3, videoDecoders: 3, av1: true,
            productNames: ["L40"], aliases: ["L40"]),
        MachineType(
            name: "GPU-A100-80GB", family: .gpu, vramGB: 80, ramMB: 120 * 1024, cpuMilli: 12000,
            bandwidthGBps: 2000, videoEncoders: nil, videoDecoders: 5,
            productNames: ["A100-SXM4-80GB", "A100-PCIE-80GB", "A100 80GB"], aliases: ["A100-80GB"]),
        MachineType(
            name: "GPU-H100", family: .gpu, vramGB: 80, ramMB: 112 * 1024, cpuMilli: 12000,
            bandwidthGBps: 3400, videoEncoders: nil, videoDecoders: 7,
            productNames: ["H100"], aliases: ["H100-80GB", "H100"]),
        MachineType(
            name: "GPU-RTXPRO6000", family: .gpu, vramGB: 96, ramMB: 192 * 1024, cpuMilli: 16000,
            bandwidthGBps: 1800, videoEncoders: 4, videoDecoders: 4, av1: true,
            productNames: ["RTX PRO 6000"], aliases: ["RTX-PRO-6000", "RTXPRO6000"]),
        MachineType(
            name: "GPU-H200", family: .gpu, vramGB: 141, ramMB: 112 * 1024, cpuMilli: 12000,
            bandwidthGBps: 4800, videoEncoders: nil, videoDecoders: 7,
            productNames: ["H200"], aliases: ["H200-141GB", "H200"]),
        MachineType(
            name: "GPU-B200", family: .gpu, vramGB: 192, ramMB: 210 * 1024, cpuMilli: 19000,
            bandwidthGBps: 8000, videoEncoders: nil, videoDecoders: 7,
            productNames: ["B200"], aliases: ["B200-192GB", "B200"]),
    ])

    /// The type called `name`, by name or alias, ignoring case.
    public func named(_ name: String) -> MachineType? {
        positions[name.lowercased()].map { types[$0] }
    }

    /// The GPU types only, smallest VRAM first.
    public var gpuTypes: [MachineType] { types.filter { $0.family == .gpu } }

    /// The largest VRAM of one GPU in the table.
    public var largestVRAMGB: Int { gpuTypes.map(\.vramGB).max() ?? 0 }

    /// The smallest GPU type whose VRAM holds `vramGB`, optionally among `candidates` (tried in order).
    public func smallestGPU(fitting vramGB: Int, among candidates: [String]? = nil) -> MachineType? {
        let pool = candidates.map { names in names.compactMap { named($0) } } ?? gpuTypes
        return pool.filter { $0.family == .gpu && $0.vramGB >= vramGB }.min { $0.vramGB < $1.vramGB }
    }

    /// The machine type a host with GPUs of this NVML product name and memory belongs to.
    public func matching(product: String, memoryMiB: Int) -> MachineType? {
        let lower = product.lowercased()
        let memoryGB = Int((Double(memoryMiB) / 1024).rounded())
        let byName = gpuTypes.filter { type in
            type.productNames.contains { lower.contains($0.lowercased()) }
        }
        // Several types share a product (A100 40/80 GB): the closest VRAM wins.
        return byName.min { abs($0.vramGB - memoryGB) < abs($1.vramGB - memoryGB) }
    }
}
