#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import GPUPlaneSystem
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// One node of a ``HollowFleet``: the agent's watches, with reports in place of containers.
struct HollowNode: Sendable {
    let name: String
    let index: Int
    let api: NodeAPI.Client
    let shape: HollowNodeShape
    let fleet: HollowFleet

    /// What was scheduled or reported for each workload: the binding it was for.
    private final class Reported: Sendable {
        let bindings = Locked([String: Binding]())
    }

    /// Follows the replicas and model servers bound here, as the agent does (one watch
    /// connection): reports each replica `running`, and each model server ready, after the run
    /// delay (once per binding).
    func followWorkloads() async {
        let replicas = Reported()
        let servers = Reported()
        for await change in api.workloadChanges(node: name) {
            fleet.count { $0.watchChanges += 1 }
            switch change {
            case .replicas(let change): follow(change, replicas)
            case .modelServers(let change): follow(change, servers)
            }
        }
    }

    private func follow(_ change: ReplicaChange, _ reported: Reported) {
        switch change {
        case .listed(let replicas):
            let keys = Set(replicas.map(Self.key))
            reported.bindings.withLock { $0 = $0.filter { keys.contains($0.key) } }
            for replica in replicas { consider(replica, reported) }
        case .upserted(let replica):
            consider(replica, reported)
        case .deleted(let replica):
            _ = reported.bindings.withLock { $0.removeValue(forKey: Self.key(replica)) }
        }
    }

    private static func key(_ replica: Replica) -> String { "\(replica.metadata.tenant)/\(replica.metadata.name)" }

    private func consider(_ replica: Replica, _ reported: Reported) {
        guard let binding = replica.binding, binding.node == name else { return }
        if replica.status.phase == .running, replica.status.observedBinding == binding { return }
        let key = Self.key(replica)
        let fresh = reported.bindings.withLock { bindings -> Bool in
            guard bindings[key] != binding else { return false }
            bindings[key] = binding
            return true
        }
        guard fresh else { return }
        fleet.record("seen", key)
        let delay = fleet.configuration.runDelay
        let serves = replica.spec.servingPort != nil || replica.spec.ingressPort != nil
        Task {
            try? await Task.sleep(for: delay)
            // Still the binding it was seen with (not deleted or moved meanwhile)?
            guard reported.bindings.withLock({ $0[key] }) == binding else { return }
            let status = ReplicaStatus(
                phase: .running, containerID: "hollow-\(name)-\(replica.metadata.name)", ready: serves ? true : nil,
                endpoint: serves ? "http://127.0.0.1:9" : nil, observedBinding: binding)
            await report(key) {
                try await api.reportStatus(replica: replica.metadata.tenant, replica.metadata.name, status)
            }
            fleet.count { $0.replicasRunning += 1 }
            fleet.record("running", key)
        }
    }

    private func follow(_ change: ModelServerChange, _ reported: Reported) {
        switch change {
        case .listed(let servers):
            for server in servers { consider(server, reported) }
        case .upserted(let server):
            consider(server, reported)
        case .deleted(let server):
            _ = reported.bindings.withLock { $0.removeValue(forKey: server.metadata.name) }
        }
    }

    private func consider(_ server: ModelServer, _ reported: Reported) {
        guard let binding = server.binding, binding.node == name, !server.status.ready else { return }
        let key = server.metadata.name
        let fresh = reported.bindings.withLock { bindings -> Bool in
            guard bindings[key] != binding else { return false }
            bindings[key] = binding
            return true
        }
        guard fresh else { return }
        let delay = fleet.configuration.runDelay
        Task {
            try? await Task.sleep(for: delay)
            guard reported.bindings.withLock({ $0[key] }) == binding else { return }
            let report = ModelServer.Report(
                ready: true, endpoint: "http://127.0.0.1:9",
                container: ReplicaStatus(phase: .running, containerID: "hollow-\(name)-\(key)", observedBinding: binding))
            await self.report("modelserver/\(key)") { try await api.reportStatus(modelServer: key, report) }
            fleet.count { $0.modelServersReady += 1 }
        }
    }

    /// Sends `call`, three times at most; a 404 (gone or bound elsewhere) ends it quietly.
    private func report(_ what: String, _ call: () async throws -> Void) async {
        for attempt in 0..<3 {
            do {
                try await call()
                return
            } catch let error as NodeAPIError where error.code == .notFound || error.code == .cancelled {
                return
            } catch {
                if attempt == 2 {
                    fleet.count { $0.reportFailures += 1 }
                    api.logger.warning("cannot report status", metadata: ["workload": "\(what)", "error": "\(error)"])
                }
                try? await Task.sleep(for: .milliseconds(500 * (attempt + 1)))
            }
        }
    }

    /// Reports the node's GPU health as the agent's health monitor does (`GPUHealthy` and a
    /// record per GPU); `faulty`: the indices of GPUs with an XID 79.
    func reportGPUHealth(faulty: Set<Int>) async {
        let records = (0..<shape.gpus).map { gpu in
            GPUHealth(
                uuid: HollowNodeShape.uuid(node: name, gpu: gpu), healthy: !faulty.contains(gpu),
                reason: faulty.contains(gpu) ? "Xid79" : nil, temperatureC: 35)
        }
        let healthy = faulty.isEmpty
        let condition = Condition(
            type: "GPUHealthy", status: healthy, reason: healthy ? "AllGPUsHealthy" : "Xid79",
            message: healthy
                ? "\(shape.gpus) GPUs healthy"
                : faulty.sorted().map { "GPU \($0) (\(HollowNodeShape.uuid(node: name, gpu: $0))): Xid79" }.joined(separator: "; "),
            lastTransition: Date())
        await report("node status") {
            try await api.reportStatus(node: name, NodeStatus(conditions: [condition], gpuHealth: records, containers: 0))
        }
    }
}

/// Lines `event key unix-ms` (`slowbeat node unix-ms round-trip-ms`), appended in memory and written
/// to a file every half second.
final class HollowJournal: Sendable {
    private let path: String
    private let pending = Locked([String]())

    init(path: String) throws(HollowFleetError) {
        self.path = path
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw HollowFleetError("cannot write the journal \(path): errno \(errno)") }
        close(fd)
    }

    func append(_ event: String, _ key: String, detail: String? = nil) {
        let ms = Int64((Date().timeIntervalSince1970 * 1000).rounded())
        pending.withLock { $0.append("\(event) \(key) \(ms)\(detail.map { " " + $0 } ?? "")\n") }
    }

    func flushLoop() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(500))
            flush()
        }
    }

    func flush() {
        let lines = pending.withLock { lines -> [String] in
            defer { lines.removeAll() }
            return lines
        }
        guard !lines.isEmpty else { return }
        let fd = open(path, O_WRONLY | O_APPEND)
        guard fd >= 0 else { return }
        defer { close(fd) }
        let bytes = Array(lines.joined().utf8)
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard written > 0 else { return }
            offset += written
        }
    }
}
