#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore

/// Why a replica can't even be considered for placement: the request itself is wrong, not the
/// fleet (kube-scheduler's "unresolvable"). One error type for the library, with a code.
public struct PlacementError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong, stable for metrics and for deciding in code (never match `message`).
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let raw: String
        private init(_ raw: String) { self.raw = raw }
        public var description: String { raw }

        /// The replica names a catalog slug the catalog doesn't have.
        public static let unknownModel = Code("UnknownModel")
        /// `auto` was asked for but the catalog has no small shared model.
        public static let noAutoModel = Code("NoAutoModel")
        /// The replica's numbers can't be satisfied by any fleet (zero GPUs for Mode 1, …).
        public static let invalidRequest = Code("InvalidRequest")
    }

    /// The code.
    public let code: Code
    /// Words for a person.
    public let message: String

    /// Makes an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }
}

/// What one replica needs from the fleet, resolved against the catalog and the machine-type
/// table: the pipeline's only input besides the snapshot.
public struct PlacementRequest: Sendable, Hashable {
    /// The shape of what is asked for.
    public enum Demand: Sendable, Hashable {
        /// Mode 1 and custom LLM deployments: `count` whole GPUs on one node, each ≥ `vramGB`.
        case wholeGPUs(count: Int, vramGB: Int)
        /// Mode 2: one whole GPU of ≥ `vramGB` (at least 96 GB) holding a dedicated model server.
        case largeSlot(slug: String, vramGB: Int)
        /// Mode 3: attach to a running server of `slug`, or pack a new one using `vramGB` on a shared GPU.
        case shared(slug: String, vramGB: Int)
        /// A CPU pod: `cpuMilli` thousandths of a core and `memoryMB` of memory on any node with
        /// them free (CPU-only nodes preferred), no GPU.
        case cpu(cpuMilli: Int, memoryMB: Int)
    }

    /// VRAM every Mode 2 slot has at least (the 96 GB RTX PRO 6000 class).
    public static let largeSlotMinimumGB = 96

    /// The replica's name.
    public var name: String
    /// The tenant that owns it.
    public var tenant: String
    /// The application or deployment it belongs to, as `tenant/kind/name`: replicas sharing it are spread.
    public var ownerKey: String
    /// What it needs.
    public var demand: Demand
    /// The machine types allowed, canonical names, in order of preference; empty means any.
    public var machineTypes: [String]
    /// The QoS tier.
    public var priority: GPUPriority
    /// When the replica was created (older first within a tier).
    public var created: Date?
    /// CPU and memory of a GPU request whose size doesn't depend on the node (Mode 2/3 pods'
    /// own containers); nil for whole-GPU requests, which hold their node's GPU machine type's
    /// share per GPU (``resources(on:)``). CPU requests carry theirs in ``demand``.
    public var fixedResources: ComputeResources?

    /// Makes a request directly (tests, benchmarks); `machineTypes` must be canonical names.
    public init(
        name: String, tenant: String, ownerKey: String? = nil, demand: Demand,
        machineTypes: [String] = [], priority: GPUPriority = .default, created: Date? = nil,
        fixedResources: ComputeResources? = nil
    ) {
        self.name = name
        self.tenant = tenant
        self.ownerKey = ownerKey ?? "\(tenant)/\(name)"
        self.demand = demand
        self.machineTypes = machineTypes
        self.priority = priority
        self.created = created
        self.fixedResources = fixedResources
    }

    /// Resolves a pending replica: the mode comes from the catalog (never the user), `auto`
    /// becomes the catalog's `autoModel`, deployments are Mode 1 raw GPUs, machine-type aliases
    /// (`H100-80GB`) become canonical names (`GPU-H100`).
    public init(
        replica: Replica, catalog: Catalog, machineTypes table: MachineTypeTable = .standard
    ) throws(PlacementError) {
        let spec = replica.spec
        let demand: Demand
        if spec.owner.kind == .deployment || spec.mode == .dedicated {
            guard spec.gpus >= 1 else {
                throw PlacementError(.invalidRequest, "\(replica.metadata.name) asks for \(spec.gpus) whole GPUs; at least 1 is needed")
            }
            demand = .wholeGPUs(count: spec.gpus, vramGB: max(spec.vramGB, 0))
        } else if let mode = spec.mode {
            guard let slug = spec.modelSlug else {
                throw PlacementError(.invalidRequest, "\(replica.metadata.name) is \(mode.displayName) but names no model")
            }
            let model: CatalogModel
            if slug == Catalog.auto {
                guard let auto = catalog.autoModel else {
                    throw PlacementError(.noAutoModel, "model 'auto' needs a small shared model in the catalog; there is none")
                }
                model = auto
            } else {
                guard let found = catalog.model(slug) else {
                    throw PlacementError(.unknownModel, "'\(slug)' is not in the catalog")
                }
                model = found
            }
            // The catalog decides the mode, whatever the replica says.
            switch model.mode {
            case .largePinned:
                demand = .largeSlot(slug: model.slug, vramGB: max(model.vramGB, Self.largeSlotMinimumGB))
            case .sharedPinned:
                demand = .shared(slug: model.slug, vramGB: model.vramGB)
            case .dedicated:
                throw PlacementError(.invalidRequest, "catalog model '\(model.slug)' claims Mode 1")
            }
        } else {
            // A CPU pod: its size is its CPU machine type (set by the planner; XS when absent).
            // The CPU types it names are sizes, not kinds of host: no machine-type filter.
            let size = spec.resources(onNodeOf: nil, in: table)
            demand = .cpu(cpuMilli: size.cpuMilli, memoryMB: size.memoryMB)
        }
        var fixed: ComputeResources?
        if case .cpu = demand {
            fixed = nil
        } else if !spec.holdsWholeGPUs || (spec.cpuMilli != nil && spec.memoryMB != nil) {
            fixed = spec.resources(onNodeOf: nil, in: table)
        }
        self.init(
            name: replica.metadata.name, tenant: replica.metadata.tenant,
            ownerKey: Self.ownerKey(tenant: replica.metadata.tenant, owner: spec.owner),
            demand: demand,
            machineTypes: demand.isCPU ? [] : spec.machineTypes.map { table.named($0)?.name ?? $0 },
            priority: spec.priority, created: replica.metadata.created, fixedResources: fixed)
    }

    /// The spread key of an owner: `tenant/kind/name`.
    public static func ownerKey(tenant: String, owner: OwnerReference) -> String {
        "\(tenant)/\(owner.kind.rawValue)/\(owner.name)"
    }

    /// The replica's key in a snapshot: `tenant/name`.
    public var key: String { "\(tenant)/\(name)" }

    /// The `gpu-mode` label value a node must carry: Mode 1 and deployments `dedicated`,
    /// Mode 2 `large`, Mode 3 `shared`.
    /// Nil for a CPU pod, which any mode's node (or a CPU-only one) may take.
    public var mode: GPUMode? {
        switch demand {
        case .wholeGPUs: return .dedicated
        case .largeSlot: return .largePinned
        case .shared: return .sharedPinned
        case .cpu: return nil
        }
    }

    /// Whether this is a CPU pod (no GPU at all).
    public var isCPU: Bool { demand.isCPU }

    /// The CPU and memory the replica holds on `node`: a CPU pod's size, a Mode 2/3 pod's
    /// ``fixedResources``, or the node's GPU machine type's share per whole GPU.
    public func resources(on node: NodeState) -> ComputeResources {
        switch demand {
        case .cpu(let cpuMilli, let memoryMB): return ComputeResources(cpuMilli: cpuMilli, memoryMB: memoryMB)
        case .wholeGPUs(let count, _): return fixedResources ?? node.gpuShare.times(count)
        case .largeSlot, .shared: return fixedResources ?? .zero
        }
    }

    /// Whole GPUs held once placed (what the tenant limit counts): Mode 3 holds none.
    public var wholeGPUs: Int {
        switch demand {
        case .wholeGPUs(let count, _): return count
        case .largeSlot: return 1
        case .shared, .cpu: return 0
        }
    }

    /// GPUs that must be healthy on a node for it to be worth a look (none for a CPU pod).
    public var gpusNeeded: Int { isCPU ? 0 : max(wholeGPUs, 1) }

    /// VRAM needed per GPU (whole) or on the shared GPU, in GB.
    public var vramGB: Int {
        switch demand {
        case .wholeGPUs(_, let gb), .largeSlot(_, let gb), .shared(_, let gb): return gb
        case .cpu: return 0
        }
    }

    /// The catalog slug for Mode 2 and Mode 3.
    public var slug: String? {
        switch demand {
        case .wholeGPUs, .cpu: return nil
        case .largeSlot(let slug, _), .shared(let slug, _): return slug
        }
    }
}

extension PlacementRequest.Demand {
    /// Whether this is a CPU pod's demand.
    public var isCPU: Bool {
        if case .cpu = self { return true }
        return false
    }
}
