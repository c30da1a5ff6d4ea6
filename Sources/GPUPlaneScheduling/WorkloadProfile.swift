#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore

/// The shape of one unit of GPU demand, as the fragmentation measure sees it.
public struct DemandShape: Hashable, Sendable {
    /// Whole GPUs (Mode 1, deployments, Mode 2 slots) or a slice of one shared GPU (Mode 3).
    public enum Kind: Hashable, Sendable { case whole, shared }

    /// Whole or shared.
    public var kind: Kind
    /// Whole GPUs wanted on one node (1 for shared).
    public var gpus: Int
    /// Whole: the VRAM each GPU must have at least. Shared: the VRAM taken on the GPU. GB.
    public var vramGB: Int
    /// CPU it holds on the node, thousandths of a core (0 when not accounted).
    public var cpuMilli: Int
    /// The `gpu-mode` a node must admit.
    public var mode: GPUMode
    /// Machine types allowed (canonical names); empty means any.
    public var machineTypes: [String]

    /// Makes a shape.
    public init(kind: Kind, gpus: Int, vramGB: Int, cpuMilli: Int, mode: GPUMode, machineTypes: [String] = []) {
        self.kind = kind
        self.gpus = gpus
        self.vramGB = vramGB
        self.cpuMilli = cpuMilli
        self.mode = mode
        self.machineTypes = machineTypes
    }

    /// The shape of `request` on `node`; nil for a CPU pod.
    public init?(_ request: PlacementRequest, cpuMilli: Int) {
        switch request.demand {
        case .cpu:
            return nil
        case .wholeGPUs(let count, let vramGB):
            self.init(kind: .whole, gpus: count, vramGB: vramGB, cpuMilli: cpuMilli, mode: .dedicated,
                      machineTypes: request.machineTypes)
        case .largeSlot(_, let vramGB):
            self.init(kind: .whole, gpus: 1, vramGB: vramGB, cpuMilli: cpuMilli, mode: .largePinned,
                      machineTypes: request.machineTypes)
        case .shared(_, let vramGB):
            self.init(kind: .shared, gpus: 1, vramGB: vramGB, cpuMilli: cpuMilli, mode: .sharedPinned,
                      machineTypes: request.machineTypes)
        }
    }
}

/// A workload as a distribution of demand shapes, ready for the fragmentation measure of
/// Weng et al., "Beware of Fragmentation" (USENIX ATC '23): a node's fragmentation relative to
/// the workload is the GPU capacity it has free that a task drawn from the workload could not
/// use, in expectation. For one task shape: when the node cannot take it at all (mode or machine
/// type not admitted, too little CPU, no GPU that fits), every free GPU share is a fragment;
/// otherwise the free shares of the GPUs that could not hold it are. Shares are in
/// thousandths of a GPU (a GPU's free VRAM over its total, 1000 when free whole), so nodes of
/// different GPU sizes compare.
public struct WorkloadProfile: Sendable {
    /// Shapes that differ only in CPU, with their CPU needs sorted and cumulative weights.
    struct Group: Sendable {
        var kind: DemandShape.Kind
        var gpus: Int
        var vramGB: Int
        var mode: GPUMode
        var machineTypes: [String]
        /// CPU needs, ascending.
        var cpu: [Int]
        /// cumulative[i]: weight of the shapes with cpu[0...i].
        var cumulative: [Double]
        var weight: Double { cumulative.last ?? 0 }
    }

    /// A group's identity: a shape without its CPU.
    struct GroupKey: Hashable {
        var kind: DemandShape.Kind
        var gpus: Int
        var vramGB: Int
        var mode: GPUMode
        var machineTypes: [String]
    }

    let groups: [Group]
    /// Total weight (probabilities sum to 1 after dividing by it).
    public let totalWeight: Double

    /// Whether there is nothing to measure against.
    public var isEmpty: Bool { groups.isEmpty }

    /// A profile of `weights` (counts or probabilities; they are normalised).
    public init<S: Sequence>(_ weights: S) where S.Element == (DemandShape, Double) {
        var byKey: [GroupKey: [(Int, Double)]] = [:]
        var total = 0.0
        for (shape, weight) in weights where weight > 0 {
            let key = GroupKey(kind: shape.kind, gpus: shape.gpus, vramGB: shape.vramGB, mode: shape.mode, machineTypes: shape.machineTypes)
            byKey[key, default: []].append((shape.cpuMilli, weight))
            total += weight
        }
        self.totalWeight = total
        self.groups = byKey.map { key, entries in
            let sorted = entries.sorted { $0.0 < $1.0 }
            var cumulative: [Double] = []
            var sum = 0.0
            for (_, w) in sorted {
                sum += w / max(total, 1e-12)
                cumulative.append(sum)
            }
            return Group(kind: key.kind, gpus: key.gpus, vramGB: key.vramGB, mode: key.mode,
                         machineTypes: key.machineTypes, cpu: sorted.map(\.0), cumulative: cumulative)
        }.sorted { ($0.kind == .whole ? 0 : 1, $0.gpus, $0.vramGB, $0.cpu.first ?? 0) < ($1.kind == .whole ? 0 : 1, $1.gpus, $1.vramGB, $1.cpu.first ?? 0) }
    }

    /// The expected fragmentation of `node` in thousandths of a GPU, as it is now, or as it would
    /// be once `assignment` (needing `cpuMilli` of CPU there) were committed.
    public func fragmentation(of node: NodeState, after assignment: Assignment? = nil, cpuMilli: Int = 0, vramGB: Int = 0) -> Double {
        guard !groups.isEmpty, !node.gpus.isEmpty else { return 0 }
        let taken = assignment?.gpuIndices ?? []
        let kind = assignment?.kind
        var cpuFree: Int?
        if let free = node.free { cpuFree = free.cpuMilli - (assignment == nil ? 0 : cpuMilli) }
        return withUnsafeTemporaryAllocation(of: (freeGB: Int, milli: Int).self, capacity: node.gpus.count) { shareable in
            // The GPUs as the measure sees them, with the assignment applied: free capacity in
            // all, GPUs free whole (and the smallest of them), shareable ones by free VRAM.
            var freeTotal = 0
            var wholeCount = 0
            var wholeSmallestGB = Int.max
            var wholeUniform = true
            var shareableCount = 0
            for gpu in node.gpus where gpu.healthy {
                let s = Self.state(gpu, taken: taken, kind: kind, vramGB: vramGB)
                freeTotal += s.milli
                if s.freeWhole {
                    if wholeCount > 0 && gpu.vramTotalGB != wholeSmallestGB { wholeUniform = false }
                    wholeCount += 1
                    wholeSmallestGB = min(wholeSmallestGB, gpu.vramTotalGB)
                }
                if s.shareable && s.freeGB > 0 {
                    // Insertion in ascending free VRAM (a handful of GPUs).
                    var i = shareableCount
                    while i > 0 && shareable[i - 1].freeGB > s.freeGB {
                        shareable[i] = shareable[i - 1]
                        i -= 1
                    }
                    shareable[i] = (s.freeGB, s.milli)
                    shareableCount += 1
                }
            }
            if freeTotal == 0 { return 0 }
            var fragmentation = 0.0
            var pointer = 0          // first shareable GPU with enough free VRAM for the group
            var usableMilli = 0      // their free capacity
            var pointerVRAM = Int.min
            for group in groups {
                let admitted = node.admits(group.mode)
                    && (group.machineTypes.isEmpty || group.machineTypes.contains(node.machineType))
                guard admitted else {
                    fragmentation += group.weight * Double(freeTotal)
                    continue
                }
                var fitting = group.weight
                if let cpuFree { fitting = Self.cumulativeWeight(group, atMost: cpuFree) }
                let unusable: Int
                let fits: Bool
                switch group.kind {
                case .whole:
                    var holders = wholeCount
                    if wholeSmallestGB < group.vramGB {
                        holders = 0
                        if !wholeUniform {
                            for gpu in node.gpus where gpu.healthy && gpu.vramTotalGB >= group.vramGB
                                && Self.state(gpu, taken: taken, kind: kind, vramGB: vramGB).freeWhole { holders += 1 }
                        }
                    }
                    fits = holders >= group.gpus
                    unusable = freeTotal - holders * 1000
                case .shared:
                    if group.vramGB != pointerVRAM {
                        if group.vramGB < pointerVRAM { pointer = 0 }
                        pointerVRAM = group.vramGB
                        while pointer < shareableCount && shareable[pointer].freeGB < group.vramGB { pointer += 1 }
                        usableMilli = 0
                        for i in pointer..<max(pointer, shareableCount) { usableMilli += shareable[i].milli }
                    }
                    fits = pointer < shareableCount
                    unusable = freeTotal - usableMilli
                }
                fragmentation += fitting * Double(fits ? unusable : freeTotal)
                fragmentation += (group.weight - fitting) * Double(freeTotal)
            }
            return fragmentation
        }
    }

    /// A GPU once the assignment is applied: free VRAM, its share, whether it is whole or shareable.
    @inline(__always)
    static func state(
        _ gpu: GPUState, taken: [Int], kind: Assignment.Kind?, vramGB: Int
    ) -> (freeGB: Int, milli: Int, freeWhole: Bool, shareable: Bool) {
        var free = gpu.vramFreeGB
        var freeWhole = gpu.isFreeWhole
        var shareable = gpu.isShareable
        if let kind, taken.contains(gpu.index) {
            switch kind {
            case .wholeGPUs, .largeSlot, .attachLarge:
                free = 0
                freeWhole = false
                shareable = false
            case .newSharedServer:
                free -= vramGB
                freeWhole = false
            case .attach, .cpu:
                break
            }
        }
        guard shareable || freeWhole, gpu.vramTotalGB > 0 else { return (0, 0, false, false) }
        return (free, max(0, free) * 1000 / gpu.vramTotalGB, freeWhole, shareable)
    }

    private static func cumulativeWeight(_ group: Group, atMost cpu: Int) -> Double {
        // The last index with cpu[i] <= cpu, by binary search.
        var low = 0
        var high = group.cpu.count
        while low < high {
            let mid = (low + high) / 2
            if group.cpu[mid] <= cpu { low = mid + 1 } else { high = mid }
        }
        return low == 0 ? 0 : group.cumulative[low - 1]
    }
}
