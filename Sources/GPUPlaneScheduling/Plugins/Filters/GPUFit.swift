import GPUPlaneCore

/// The fit stage (Nomad's bin-pack iterator): checks GPU count and VRAM on one node and, when
/// they fit, chooses the GPUs.
///
/// - Mode 1 and deployments: N whole free GPUs, each ≥ the VRAM asked for; the smallest such
///   GPUs of the node are chosen.
/// - Mode 2: one whole free GPU of ≥ 96 GB (taking over an idle server of the slug is
///   `attachLarge(_:server:serverID:node:)`).
/// - Mode 3: a shared GPU with enough free VRAM for a new server, the fullest one that still
///   fits (attaching to a running server is `attach(_:server:node:maxAttachments:)`).
public struct GPUFit: Sendable {
    /// Fewer free GPUs than wanted, though enough of them are large enough.
    public static let insufficientGPUs = RefusalReason(code: "InsufficientGPUs", message: "not enough free GPUs")
    /// No GPU (or too few) with the VRAM wanted.
    public static let insufficientVRAM = RefusalReason(code: "InsufficientVRAM", message: "insufficient VRAM")

    /// A fit or why not.
    public enum Outcome: Sendable, Hashable {
        /// It fits this way.
        case fits(Assignment)
        /// It doesn't, because.
        case refused(RefusalReason)
    }

    /// Makes the stage.
    public init() {}

    /// Whether and how `request` fits on `node` without attaching to a running server.
    public func fit(_ request: PlacementRequest, node: NodeState) -> Outcome {
        switch request.demand {
        case .wholeGPUs(let count, let vramGB):
            return whole(count: count, vramGB: vramGB, kind: .wholeGPUs, node: node)
        case .largeSlot(_, let vramGB):
            return whole(count: 1, vramGB: vramGB, kind: .largeSlot, node: node)
        case .shared(_, let vramGB):
            return shared(vramGB: vramGB, node: node)
        case .cpu:
            // No GPU: CPU and memory were checked by `CPUMemoryFilter`.
            return .fits(Assignment(
                kind: .cpu, gpuIndices: [], server: nil, gpuVRAMGB: 0, sharedAllocatedAfterGB: 0,
                nodeFreeWholeAfter: node.freeWholeGPUs))
        }
    }

    /// An attachment to `server` on `node` when it has room and its GPU works.
    public func attach(
        _ request: PlacementRequest, server: ModelServerState, serverID: Int, node: NodeState,
        maxAttachments: Int
    ) -> Assignment? {
        guard !server.stopped, server.mode == .sharedPinned, server.slug == request.slug,
            server.attachments < maxAttachments, let p = node.position(ofGPU: server.gpuIndex),
            node.gpus[p].healthy
        else { return nil }
        let gpu = node.gpus[p]
        return Assignment(
            kind: .attach, gpuIndices: [gpu.index], server: serverID, gpuVRAMGB: gpu.vramTotalGB,
            sharedAllocatedAfterGB: gpu.vramAllocatedGB, nodeFreeWholeAfter: node.freeWholeGPUs)
    }

    /// The slot of `server`, an idle Mode 2 server of the request's slug on `node`, when its
    /// GPU works and nothing else holds it: one replica per Mode 2 server, as a dedicated slot.
    public func attachLarge(
        _ request: PlacementRequest, server: ModelServerState, serverID: Int, node: NodeState
    ) -> Assignment? {
        guard case .largeSlot(let slug, let vramGB) = request.demand, !server.stopped,
            server.mode == .largePinned, server.slug == slug, server.attached.isEmpty,
            let p = node.position(ofGPU: server.gpuIndex)
        else { return nil }
        let gpu = node.gpus[p]
        guard gpu.healthy, gpu.sharedServers.isEmpty, gpu.vramTotalGB >= vramGB,
            gpu.owner == nil || gpu.owner == server.slotOwner
        else { return nil }
        return Assignment(
            kind: .attachLarge, gpuIndices: [gpu.index], server: serverID, gpuVRAMGB: gpu.vramTotalGB,
            sharedAllocatedAfterGB: 0, nodeFreeWholeAfter: node.freeWholeGPUs - (gpu.isFreeWhole ? 1 : 0))
    }

    private func whole(count: Int, vramGB: Int, kind: Assignment.Kind, node: NodeState) -> Outcome {
        var largeEnough = 0
        var free = 0
        var chosen: [Int] = []  // positions, smallest VRAM first
        chosen.reserveCapacity(count)
        for (p, gpu) in node.gpus.enumerated() where gpu.healthy && gpu.vramTotalGB >= vramGB {
            largeEnough += 1
            guard gpu.isFreeWhole else { continue }
            free += 1
            if count == 1 {
                // The common case: keep the single smallest.
                if let best = chosen.first {
                    if gpu.vramTotalGB < node.gpus[best].vramTotalGB { chosen[0] = p }
                } else {
                    chosen.append(p)
                }
            } else {
                chosen.append(p)
            }
        }
        guard free >= count else {
            return .refused(largeEnough >= count ? Self.insufficientGPUs : Self.insufficientVRAM)
        }
        if count > 1 {
            chosen.sort { (node.gpus[$0].vramTotalGB, $0) < (node.gpus[$1].vramTotalGB, $1) }
            chosen.removeLast(chosen.count - count)
        }
        var largest = 0
        for p in chosen { largest = max(largest, node.gpus[p].vramTotalGB) }
        return .fits(Assignment(
            kind: kind, gpuIndices: chosen.map { node.gpus[$0].index }, server: nil,
            gpuVRAMGB: largest, sharedAllocatedAfterGB: 0,
            nodeFreeWholeAfter: node.freeWholeGPUs - count))
    }

    private func shared(vramGB: Int, node: NodeState) -> Outcome {
        var best: Int?
        for (p, gpu) in node.gpus.enumerated() where gpu.isShareable && gpu.vramFreeGB >= vramGB {
            // Best fit: the least VRAM left over, so GPUs fill up before new ones are opened.
            if let b = best, node.gpus[b].vramFreeGB <= gpu.vramFreeGB { continue }
            best = p
        }
        guard let p = best else { return .refused(Self.insufficientVRAM) }
        let gpu = node.gpus[p]
        return .fits(Assignment(
            kind: .newSharedServer, gpuIndices: [gpu.index], server: nil, gpuVRAMGB: gpu.vramTotalGB,
            sharedAllocatedAfterGB: gpu.vramAllocatedGB + vramGB,
            nodeFreeWholeAfter: node.freeWholeGPUs - (gpu.sharedServers.isEmpty ? 1 : 0)))
    }
}
