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
    private let reports: LoadReports
    private let admission: BatchAdmission
    private let lease: RotatingLease
    private let logger: Logger
    private let reported = Mutex<[String: DeploymentLoad]>([:])

    init(reports: LoadReports, admission: BatchAdmission, interval: Duration, logger: Logger) {
        self.reports = reports
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
        var loads = admission.drainLoad()
        let seconds = Double(interval.components.seconds) + Double(interval.components.attoseconds) / 1e18
        for key in loads.keys { loads[key]?.seconds = seconds }
        let due: [(String, DeploymentLoad)] = reported.withLock { last in
            var due: [(String, DeploymentLoad)] = []
            for (deployment, load) in loads where load.demand > 0 { due.append((deployment, load)) }
            for (deployment, previous) in last where previous.demand > 0 && (loads[deployment]?.demand ?? 0) == 0 {
                due.append((deployment, DeploymentLoad(peak: 0)))
            }
            return due
        }
        guard !due.isEmpty else { return }
        let written = due.compactMap { deployment, load -> LoadReports.Report? in
            let parts = deployment.split(separator: "/", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { return nil }
            return LoadReports.Report(tenant: parts[0], deployment: parts[1], load: load)
        }
        do {
            try await reports.write(written, reporter: reporter, lease: lease)
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
