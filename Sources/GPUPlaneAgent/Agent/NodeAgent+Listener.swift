#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import GPUPlaneListener
import GPUPlaneSystem
import HTTPTypes
import HummingbirdCore
import Metrics
import NIOCore
import ServiceLifecycle

/// The node-agent's listener routes (``DaemonListener``, the agent's `port`): container logs for
/// the api-server, signed with this node's key (``AgentRequestSignature``), and the metrics the
/// agent exports.
extension NodeAgent {
    /// `GET /v1/logs/{tenant}/{replica}?tail=N&follow=true`: the replica's container output,
    /// stdout and stderr interleaved, one line per line; with `follow`, until the container stops
    /// or the caller goes. Only the api-server's signed requests are answered.
    public func listenerRoute(_ request: DaemonListener.Request) async -> DaemonListener.Answer? {
        let parts = request.path.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 5, parts[0].isEmpty, parts[1] == "v1", parts[2] == "logs" else { return nil }
        guard request.method == .get else {
            return .error(.methodNotAllowed, code: "method_not_allowed", "\(request.path) answers GET only")
        }
        guard let key = agentKey else {
            return .error(.serviceUnavailable, code: "unavailable", "this node-agent has not fetched its key from the api-server yet; retry")
        }
        do {
            try AgentRequestSignature.verify(
                request.headers[.authorization], key: key, method: "GET", target: request.target,
                now: Int64(Date().timeIntervalSince1970))
        } catch {
            AgentMetrics.refusedListenerRequests.increment()
            logger.warning("refused a listener request", metadata: ["path": "\(request.path)", "why": "\(error)"])
            return .error(.unauthorized, code: "unauthorized", "only the api-server's signed requests are answered (\(error))")
        }
        let tenant = String(parts[3])
        let name = String(parts[4])
        // Replica names are DNS labels joined by dots (`<application>.<pod>`, `<deployment>-<n>`).
        let isName = { (text: String) in text.utf8.count <= 253 && text.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { Syntax.isDNSLabel(String($0)) } }
        guard isName(tenant) || tenant == ObjectMeta.clusterTenant, isName(name) else {
            return .error(.badRequest, code: "bad_request", "'\(tenant)/\(name)' is not a replica name")
        }
        var tail: Int?
        if let text = request.query["tail"] {
            guard let value = Int(text), value >= 0 else {
                return .error(.badRequest, code: "bad_request", "tail must be a whole number of lines, 0 or more, not '\(text)'")
            }
            tail = value
        }
        let follow = request.query["follow"] == "true" || request.query["follow"] == "1"
        let container = ContainerPlan.containerName(tenant: tenant, name: name)
        do {
            _ = try await engine.inspect(container)
            guard follow else {
                let lines = try await engine.logs(container, tail: tail)
                return .text(.ok, lines.map { $0.text + "\n" }.joined())
            }
            let engine = self.engine
            let first = tail
            return DaemonListener.Answer(
                status: .ok, contentType: "text/plain; charset=utf-8",
                body: ResponseBody { writer in
                    // A followed log never ends by itself, and the listener's graceful shutdown
                    // waits for the answers in flight: the agent's shutdown ends the follow.
                    let relay = AsyncThrowingStream<ContainerEngine.LogLine, any Error>.makeStream()
                    let pump = Task {
                        do {
                            for try await line in engine.followLogs(container, tail: first) { relay.continuation.yield(line) }
                            relay.continuation.finish()
                        } catch {
                            relay.continuation.finish(throwing: error)
                        }
                    }
                    defer { pump.cancel() }
                    try await withGracefulShutdownHandler {
                        for try await line in relay.stream {
                            try await writer.write(ByteBuffer(string: line.text + "\n"))
                        }
                    } onGracefulShutdown: {
                        relay.continuation.finish()
                    }
                    try await writer.finish(nil)
                })
        } catch where error.code == .notFound {
            return .error(.notFound, code: "not_found", "replica \(tenant)/\(name) has no container on node \(configuration.nodeName)")
        } catch {
            return .error(.badGateway, code: "upstream", "the container engine failed: \(error.message)")
        }
    }

    /// Fetches this node's listener key from the api-server, retrying with doubling pauses
    /// until it has it or the agent stops.
    func agentKeyLoop() async {
        var pause = Duration.milliseconds(200)
        while !Task.isCancelled {
            do {
                let key = try await api.agentKey(node: configuration.nodeName)
                agentKeyStore.withLock { $0 = key }
                return
            } catch {
                logger.warning("cannot fetch the listener key; container logs are refused until it comes", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: pause)
            pause = min(pause * 2, .seconds(30))
        }
    }

    /// This node's listener key, once fetched.
    var agentKey: [UInt8]? { agentKeyStore.withLock { $0 } }

    /// The agent's per-GPU gauges from one health snapshot.
    func exportGPUMetrics(_ snapshot: GPUHealthSnapshot, gpus: [GPUDevice]) {
        for record in snapshot.gpus {
            let index = gpus.first { $0.uuid == record.uuid }.map { String($0.index) } ?? "?"
            let labels = [("gpu", index), ("uuid", record.uuid)]
            Gauge(label: "gpuplane_agent_gpu_healthy", dimensions: labels).record(record.healthy ? 1 : 0)
            if let value = record.utilizationPercent {
                Gauge(label: "gpuplane_agent_gpu_utilization_percent", dimensions: labels).record(value)
            }
            if let value = record.memoryUsedMiB {
                Gauge(label: "gpuplane_agent_gpu_memory_used_mib", dimensions: labels).record(value)
            }
            if let value = record.temperatureC {
                Gauge(label: "gpuplane_agent_gpu_temperature_celsius", dimensions: labels).record(value)
            }
            if let value = record.powerW {
                Gauge(label: "gpuplane_agent_gpu_power_watts", dimensions: labels).record(value)
            }
        }
        Gauge(label: "gpuplane_agent_gpus_unhealthy").record(snapshot.gpus.filter { !$0.healthy }.count)
    }
}

/// The node-agent's counters.
enum AgentMetrics {
    /// Containers restarted after they exited.
    static let containerRestarts = Counter(label: "gpuplane_agent_container_restarts_total")
    /// Listener requests refused for a missing or bad signature.
    static let refusedListenerRequests = Counter(label: "gpuplane_agent_listener_refused_total")
    /// How long each answered heartbeat took (``NodeLiveness``).
    static let heartbeatSeconds = Timer(label: "gpuplane_agent_heartbeat_seconds", preferredDisplayUnit: .seconds)

    /// Creates the counters now, so `/metrics` shows them at 0 from the start (Prometheus's
    /// `rate()` then sees the first restart); call after ``MetricsExporter/bootstrap()``.
    static func register() {
        _ = (containerRestarts, refusedListenerRequests, heartbeatSeconds)
    }
}
