#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import GPUPlaneListener
import GPUPlaneService
import GPUPlaneStore
import GPUPlaneSystem
import Logging
import ServiceLifecycle

/// The `gpuplane-scheduler` process: configuration, logging, the scheduler replica, systemd.
public enum SchedulerMain {
    /// The default configuration file.
    public static let configFile = "/etc/gpuplane/scheduler.conf"

    /// The configuration keys (file `key = value`, env `GPUPLANE_<KEY>`, flags `--key`).
    public static let keys: [ConfigurationKey] = EtcdConnectionSettings.keys() + [
        .init("identity", .string, help: "this replica's name in the election (default host-pid)"),
        .init("election", .string, default: Scheduler.defaultElectionName, help: "the election's key prefix"),
        .init("lease-ttl", .duration, default: "3s", help: "leader lease time to live (whole seconds)"),
        .init("meter-interval", .duration, default: "5m", help: "usage meter interval (whole seconds, at least 1s)"),
        .init("meter-backfill", .int, default: "12", help: "missed meter intervals a new leader backfills at most"),
        .init("usage-retention", .duration, default: "400d", help: "usage records of a month that ended longer ago than this become monthly totals (at least 1s)"),
        .init("warm-pool", .list, default: "", help: "slug=count model servers kept running with no tenant"),
        .init("resync-interval", .duration, default: "1s", help: "pending replicas are looked at again this often"),
        .init("idle-server-grace", .duration, default: "60s", help: "idle model servers stop after this long"),
        .init("event-ttl", .duration, default: "1h", help: "etcd deletes an event this long after its last write (at least 1s)"),
        .init("autoscale-interval", .duration, default: "2s", help: "how often deployments are sized for the gateways' load (at least 1s)"),
        .init("scale-down-delay", .duration, default: "5m", help: "how long fewer instances must be wanted before a deployment scales down"),
        .init("catalog-file", .string, help: "operator catalog (JSON) overriding the bundled one; give the api-server the same"),
        MemoryTrim.key,
        .init("log-level", .string, default: "info", help: "trace, debug, info, notice, warning, error, critical"),
        .init("log-destination", .string, default: "automatic", help: "automatic, journald or stderr"),
    ] + DaemonListener.keys(defaultAddress: "0.0.0.0", defaultPort: defaultPort, what: "the scheduler's /metrics")

    /// The listener's default port.
    public static let defaultPort = 9448

    /// Caps glibc's malloc arenas at one (unless `MALLOC_ARENA_MAX` is set), not glibc's up to
    /// eight per core: at 5,000 nodes two kept 7 MB less resident than four, and one 5 MB less
    /// than two; each thread's cache (tcache) still serves most small allocations without the
    /// arena's lock (docs/operations.md, docs/benchmarks.md). Call from `main` before the
    /// first `await`: a thread that allocated before it (the first hop to the concurrency
    /// pool) keeps the arena it made.
    public static func limitMallocArenas() {
        SystemThread.limitMallocArenasUnlessSet(1)
    }

    /// Runs the scheduler replica until SIGTERM; the process's exit status.
    public static func run() async -> Int32 {
        do {
            let config = try Configuration.load(keys: keys, defaultConfigFile: configFile)
            let level = Logger.Level(rawValue: try config.string("log-level") ?? "info") ?? .info
            let destination = GPUPlaneLogging.Destination(rawValue: try config.string("log-destination") ?? "automatic") ?? .automatic
            GPUPlaneLogging.bootstrap(identifier: "gpuplane-scheduler", level: level, destination: destination)
            let logger = Logger(label: "gpuplane.scheduler")
            try MemoryTrim.start(config)
            // Before the store is made: its write batcher's counters are created with it.
            let port = try config.int("port") ?? defaultPort
            if port != 0 {
                MetricsExporter.bootstrap()
                SchedulerMetrics.register()
                HeapMetrics.register()
            }

            let catalog = try Catalog.load(overrideFile: try config.string("catalog-file"))
            let etcd = try EtcdConnectionSettings(config)
            let store = try ResourceStore.connect(
                endpoints: etcd.endpoints, caFile: etcd.caFile, certFile: etcd.certFile, keyFile: etcd.keyFile,
                credentials: etcd.credentials.map { ($0.user, $0.password) }, logger: logger)
            let scheduler = Scheduler(
                store: store, pipeline: Pipeline(catalog: catalog),
                configuration: try schedulerConfiguration(config, catalog: catalog), logger: logger,
                onStatus: { status in try? SystemdNotifier().status(status) })
            let notifier = SystemdNotifier()
            var services: [any Service] = [scheduler, WatchdogService(notifier: notifier, isHealthy: { true })]
            if port != 0 {
                guard (1...65535).contains(port) else {
                    throw ConfigurationError(code: .invalidValue, key: "port", source: config.source(of: "port"), detail: "must be 0 (no listener) or 1 to 65535, not \(port)")
                }
                services.append(DaemonListener(host: try config.string("listen") ?? "0.0.0.0", port: port, tls: try ServerTLS.load(config), logger: logger))
            }
            let daemon = Daemon(
                services: services,
                notifier: notifier, readyStatus: "campaigning", logger: logger)
            try await daemon.run()
            return 0
        } catch {
            LogLineSink.standardError.write("gpuplane-scheduler: \(error)")
            return 1
        }
    }

    /// The replica's settings from `config`, each checked.
    /// - Throws: ``ConfigurationError`` naming the key whose value cannot be used.
    public static func schedulerConfiguration(_ config: Configuration, catalog: Catalog) throws(ConfigurationError) -> Scheduler.Configuration {
        var session = LeaderSession.Configuration()
        session.resyncInterval = try config.duration("resync-interval") ?? .seconds(1)
        session.idleServerGrace = try config.duration("idle-server-grace") ?? .seconds(60)
        let warmPool = try config.list("warm-pool") ?? []
        do {
            session.warmPool = try Scheduler.parseWarmPool(warmPool, catalog: catalog)
        } catch {
            throw ConfigurationError(code: .invalidValue, key: "warm-pool", source: config.source(of: "warm-pool"), detail: error.message)
        }
        session.meter.interval = try config.duration("meter-interval") ?? .seconds(300)
        session.meter.backfillLimit = try config.int("meter-backfill") ?? 12
        session.usageRetention = try atLeastOneSecond(config, "usage-retention", fallback: UsageRetention.defaultRetention, example: "400d")
        session.eventTTL = try atLeastOneSecond(config, "event-ttl", fallback: .seconds(3600), example: "1h")
        session.autoscaleInterval = try atLeastOneSecond(config, "autoscale-interval", fallback: .seconds(2), example: "2s")
        session.scaleDownDelay = try config.duration("scale-down-delay") ?? .seconds(300)
        return Scheduler.Configuration(
            identity: try config.string("identity") ?? Scheduler.defaultIdentity(),
            electionName: try config.string("election") ?? Scheduler.defaultElectionName,
            leaseTTL: max(1, (try config.duration("lease-ttl") ?? .seconds(3)).components.seconds),
            session: session)
    }

    private static func atLeastOneSecond(
        _ config: Configuration, _ key: String, fallback: Duration, example: String
    ) throws(ConfigurationError) -> Duration {
        let value = try config.duration(key) ?? fallback
        guard value >= .seconds(1) else {
            throw ConfigurationError(code: .invalidValue, key: key, source: config.source(of: key), detail: "must be at least 1s, e.g. \(example)")
        }
        return value
    }
}
