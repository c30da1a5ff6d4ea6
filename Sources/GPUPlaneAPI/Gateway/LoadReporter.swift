import EtcdClient
import Foundation
import GPUPlaneCore
import GPUPlaneStore
import Logging
import Synchronization

/// Writes what this api-server's gateway sees of each deployment's load to etcd every
/// `interval`, for the scheduler's autoscaler (see ``DeploymentLoad``).
///
/// A deployment with load is reported every interval, which also keeps its key's lease fresh;
/// one whose load fell to nothing is reported once as zero and then left to its lease. The
/// reports go under a ``RotatingLease``, so an api-server that stops takes its reports with it
/// within `interval × 5`.
final class LoadReporter: Sendable {
    /// This api-server's name among reporters: random per process.
    let reporter = String(ObjectMeta.newUID().prefix(8))
    let interval: Duration
    private let etcd: Etcd.Client
    private let admission: BatchAdmission
    private let lease: RotatingLease
    private let logger: Logger
    private let reported = Mutex<[String: DeploymentLoad]>([:])

    init(etcd: Etcd.Client, admission: BatchAdmission, interval: Duration, logger: Logger) {
        self.etcd = etcd
        self.admission = admission
        self.interval = interval
        self.lease = RotatingLease(ttl: interval * 4)
        self.logger = logger
    }

    /// Reports every `interval` until cancelled.
    func run() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            guard !Task.isCancelled else { return }
            await reportOnce()
        }
    }

    /// One round: the loads since the last round, and a zero for each deployment that went quiet.
    func reportOnce() async {
        let loads = admission.drainLoad()
        let due: [(String, DeploymentLoad)] = reported.withLock { last in
            var due: [(String, DeploymentLoad)] = []
            for (deployment, load) in loads where load.demand > 0 { due.append((deployment, load)) }
            for (deployment, previous) in last where previous.demand > 0 && (loads[deployment]?.demand ?? 0) == 0 {
                due.append((deployment, DeploymentLoad(peak: 0)))
            }
            return due
        }
        guard !due.isEmpty else { return }
        do {
            let leaseID = try await lease.lease(etcd: etcd)
            for chunk in stride(from: 0, to: due.count, by: 100).map({ Array(due[$0..<min($0 + 100, due.count)]) }) {
                var puts: [Etcd.RequestOp] = []
                for (deployment, load) in chunk {
                    let parts = deployment.split(separator: "/", maxSplits: 1).map(String.init)
                    guard parts.count == 2 else { continue }
                    let key = DeploymentLoad.key(tenant: parts[0], deployment: parts[1], reporter: reporter)
                    puts.append(.put(Etcd.PutRequest(key: Data(key.utf8), value: try GPUPlaneJSON.encode(load), lease: leaseID)))
                }
                _ = try await etcd.txn(compare: [], success: puts)
            }
            reported.withLock { last in
                for (deployment, load) in due {
                    if load.demand > 0 { last[deployment] = load } else { last[deployment] = nil }
                }
            }
        } catch {
            logger.warning("cannot report deployment load; will retry", metadata: ["error": "\(error)"])
        }
    }
}
