#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import Logging

/// What the reconciler remembers of one workload's weights and loading.
struct WeightsProgress {
    /// The fetch it waits on (shared with every workload of the same source).
    var job: WeightsFetchJob?
    /// The last fetch's failure, shown until ``retryAt``.
    var failure: WeightsError?
    /// When the weights are fetched again after ``failure``.
    var retryAt: ContinuousClock.Instant?
    /// How long the fetch took (0: the cache held them).
    var fetchSeconds: Double?
    /// Their size.
    var bytes: Int64?
    /// When this agent last started the container (load time is measured from here).
    var startedAt: ContinuousClock.Instant?
    /// From that start to the engine's first answer.
    var loadSeconds: Double?
    /// The engine's last log lines after an exit, and which exit they are of.
    var logTail: [String]?
    var logTailOf: String?

    mutating func started(at now: ContinuousClock.Instant) {
        startedAt = now
        loadSeconds = nil
    }
}

/// Whether a workload's container may be made: with its weights, or not yet (the status to report).
enum WeightsGate {
    case ready(WeightsEntry)
    case waiting(ReplicaStatus)
}

extension Reconciler {
    /// Tells the weights cache what must stay: what every container of the node mounts (its
    /// ``ContainerPlan/weightsLabel``) and what every workload bound here wants.
    func markWeightsInUse(containers: [ContainerEngine.ContainerSummary], plans: [String: ContainerPlan]) {
        guard let cache = weightsCache else { return }
        var inUse = Set(containers.compactMap { $0.labels[ContainerPlan.weightsLabel] })
        for plan in plans.values {
            if let weights = plan.weights, let source = try? weights.parsed(), let address = cache.knownAddress(source) {
                inUse.insert(address)
            }
        }
        cache.setInUse(inUse)
    }

    /// Gets the weights a container about to be made mounts: at once when the cache holds them
    /// (or the host path exists); otherwise starts (or joins) their fetch and reports
    /// `starting`/``ReplicaStatus/Reason/fetchingWeights`` with the bytes until it ends; a failed
    /// fetch is `failed`/``ReplicaStatus/Reason/weightsFailed`` with the reason until the
    /// restart backoff has passed, then fetched again.
    func weightsGate(
        _ entry: inout Tracked, _ status: ReplicaStatus, _ weights: ServingWeights, workload: Workload, log: Logger
    ) async -> WeightsGate {
        let now = clock.now
        let source: WeightsSource
        do {
            source = try weights.parsed()
        } catch {
            return .waiting(weightsFailed(&entry, status, WeightsError(.invalid, "weights '\(weights.source)': \(error.message)"), log: log))
        }
        if let job = entry.weights.job {
            switch job.outcome {
            case nil:
                return .waiting(fetching(&entry, status, job))
            case .success(let found):
                entry.weights.job = nil
                entry.weights.fetchSeconds = job.seconds
                entry.weights.bytes = found.bytes
                return checkedFile(&entry, status, weights, found, log: log)
            case .failure(let error):
                entry.weights.job = nil
                return .waiting(weightsFailed(&entry, status, error, log: log))
            }
        }
        if let failure = entry.weights.failure, let retryAt = entry.weights.retryAt, now < retryAt {
            entry.nextAttempt = retryAt
            return .waiting(failedStatus(entry, status, failure, source: weights.source))
        }
        entry.weights.failure = nil
        entry.weights.retryAt = nil
        guard let cache = weightsCache else {
            if case .hostPath(let path) = source {
                guard FileManager.default.fileExists(atPath: path) else {
                    return .waiting(weightsFailed(&entry, status, WeightsError(.missing, "host path \(path) does not exist on this node"), log: log))
                }
                return checkedFile(&entry, status, weights, WeightsEntry(address: path, path: path, bytes: 0), log: log)
            }
            return .waiting(weightsFailed(
                &entry, status,
                WeightsError(.invalid, "this node-agent has no weights cache; set weights-cache to fetch \(weights.source)"), log: log))
        }
        if let found = cache.resolve(source) {
            if entry.weights.fetchSeconds == nil { entry.weights.fetchSeconds = 0 }
            if found.bytes > 0 { entry.weights.bytes = found.bytes }
            return checkedFile(&entry, status, weights, found, log: log)
        }
        if case .hostPath(let path) = source {
            return .waiting(weightsFailed(&entry, status, WeightsError(.missing, "host path \(path) does not exist on this node"), log: log))
        }
        var token: String?
        if weights.tokenSecret != nil, case .replica(let replica) = workload {
            switch await SecretEnvironment.values(for: replica, api: api) {
            case .success(let values): token = values[ServingWeights.tokenVariable]
            case .failure(let failure):
                return .waiting(weightsFailed(&entry, status, WeightsError(.unauthorized, "the Hugging Face token: \(failure.message)"), log: log))
            }
        }
        let job = cache.fetch(source, token: token)
        entry.weights.job = job
        entry.nextAttempt = nil
        return .waiting(fetching(&entry, status, job))
    }

    /// The weights when the file the catalog names is in them.
    private func checkedFile(
        _ entry: inout Tracked, _ status: ReplicaStatus, _ weights: ServingWeights, _ found: WeightsEntry, log: Logger
    ) -> WeightsGate {
        if let file = weights.file, !FileManager.default.fileExists(atPath: found.path + "/" + file) {
            return .waiting(weightsFailed(
                &entry, status, WeightsError(.missing, "weightsFile \(file) is not in the weights of \(weights.source)"), log: log))
        }
        return .ready(found)
    }

    private func fetching(_ entry: inout Tracked, _ status: ReplicaStatus, _ job: WeightsFetchJob) -> ReplicaStatus {
        var status = status
        let (done, total) = job.progress
        status.phase = .starting
        status.reason = .fetchingWeights
        status.message = job.progressMessage
        status.loading = LoadingStatus(stage: .fetching, message: job.progressMessage, bytesDone: done, bytesTotal: total)
        entry.nextAttempt = nil
        return status
    }

    private func weightsFailed(_ entry: inout Tracked, _ status: ReplicaStatus, _ error: WeightsError, log: Logger) -> ReplicaStatus {
        let now = clock.now
        entry.weights.failure = error
        entry.weights.retryAt = now + entry.backoff
        entry.nextAttempt = entry.weights.retryAt
        if entry.current.reason != .weightsFailed || entry.current.loading?.message != error.message {
            log.error("weights failed", metadata: ["code": "\(error.code.rawValue)", "reason": "\(error.message)", "backoff": "\(entry.backoff)"])
        }
        let shown = failedStatus(entry, status, error, source: nil)
        entry.backoff = min(entry.backoff * 2, settings.restartBackoffMax)
        return shown
    }

    private func failedStatus(_ entry: Tracked, _ status: ReplicaStatus, _ error: WeightsError, source: String?) -> ReplicaStatus {
        var status = status
        status.phase = .failed
        status.reason = .weightsFailed
        status.exitCode = nil
        status.message = "\(error.message); trying again after a \(Self.text(entry.backoff)) backoff"
        status.loading = LoadingStatus(stage: .failed, message: error.message, reason: error.loadingReason)
        return status
    }

    /// The loading stage of a model server or deployment instance after this pass: what the
    /// weights gate said (fetching, failed), else loading while its container runs and its
    /// engine does not answer, ready once it does (with the load time), failed with the
    /// engine's last log lines when it exited.
    func loadingStatus(_ entry: inout Tracked, _ status: ReplicaStatus, plan: ContainerPlan, key: String) async -> LoadingStatus? {
        var loading: LoadingStatus
        if status.reason == .fetchingWeights || status.reason == .weightsFailed, let given = status.loading {
            loading = given
        } else if status.phase == .running {
            if entry.ready {
                if entry.weights.loadSeconds == nil, let started = entry.weights.startedAt {
                    let seconds = (clock.now - started).seconds
                    entry.weights.loadSeconds = seconds
                    WeightsMetrics.loadSeconds.recordSeconds(seconds)
                    replicaLogger(key).notice("model loaded", metadata: ["seconds": "\(seconds)"])
                }
                loading = LoadingStatus(stage: .ready, loadSeconds: entry.weights.loadSeconds)
            } else if plan.servingPort != nil {
                loading = LoadingStatus(stage: .loading, message: "loading: the engine does not answer /v1/models yet")
            } else {
                return nil
            }
        } else if status.reason == .crashLoopBackOff, let id = status.containerID {
            let which = "\(id)#\(status.restarts)"
            if entry.weights.logTailOf != which {
                entry.weights.logTailOf = which
                entry.weights.logTail = (try? await engine.logs(id, tail: 20))?.map(\.text)
            }
            loading = LoadingStatus(
                stage: .failed, message: status.message, reason: .engineExited, logTail: entry.weights.logTail)
        } else {
            return nil
        }
        if loading.stage != .fetching {
            if let bytes = entry.weights.bytes, bytes > 0 {
                loading.bytesDone = bytes
                loading.bytesTotal = bytes
            }
        }
        loading.fetchSeconds = entry.weights.fetchSeconds
        return loading
    }
}
