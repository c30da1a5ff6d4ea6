import EtcdClient
import Foundation
import GPUPlaneCore
import GPUPlaneScheduling
import GPUPlaneService
import GPUPlaneStore
import Logging

/// Every setting, spelled `key = value` in the file, `GPUPLANE_KEY` in the environment, `--key` on the command line.
let keys: [ConfigurationKey] = [
    .init("etcd.endpoints", .list, default: "http://127.0.0.1:2379", help: "etcd client URLs"),
    .init("identity", .string, help: "this replica's name in the election (default host-pid)"),
    .init("election", .string, default: Scheduler.defaultElectionName, help: "the election's key prefix"),
    .init("lease-ttl", .duration, default: "3s", help: "leader lease time to live (whole seconds)"),
    .init("meter-interval", .duration, default: "5m", help: "usage meter interval (whole seconds, at least 1s)"),
    .init("meter-backfill", .int, default: "12", help: "missed meter intervals a new leader backfills at most"),
    .init("warm-pool", .list, default: "", help: "slug=count model servers kept running with no tenant"),
    .init("resync-interval", .duration, default: "1s", help: "pending replicas are looked at again this often"),
    .init("idle-server-grace", .duration, default: "60s", help: "idle model servers stop after this long"),
    .init("event-ttl", .duration, default: "1h", help: "etcd deletes an event this long after its last write (at least 1s)"),
    .init("autoscale-interval", .duration, default: "2s", help: "how often deployments are sized for the gateways' load (at least 1s)"),
    .init("scale-down-delay", .duration, default: "5m", help: "how long fewer instances must be wanted before a deployment scales down"),
    .init("catalog-file", .string, help: "operator catalog (JSON) overriding the bundled one; give the api-server the same"),
    .init("log-level", .string, default: "info", help: "trace, debug, info, notice, warning, error, critical"),
    .init("log-destination", .string, default: "automatic", help: "automatic, journald or stderr"),
]

do {
    let config = try Configuration.load(keys: keys, defaultConfigFile: "/etc/gpuplane/scheduler.conf")
    let level = Logger.Level(rawValue: try config.string("log-level") ?? "info") ?? .info
    let destination = GPUPlaneLogging.Destination(rawValue: try config.string("log-destination") ?? "automatic") ?? .automatic
    GPUPlaneLogging.bootstrap(identifier: "gpuplane-scheduler", level: level, destination: destination)
    let logger = Logger(label: "gpuplane.scheduler")

    let catalog = try Catalog.load(overrideFile: try config.string("catalog-file"))
    let client = try Etcd.Client(Etcd.Configuration(endpoints: try config.list("etcd.endpoints") ?? [], logger: logger))
    let store = ResourceStore(client: client)
    var session = LeaderSession.Configuration()
    session.resyncInterval = try config.duration("resync-interval") ?? .seconds(1)
    session.idleServerGrace = try config.duration("idle-server-grace") ?? .seconds(60)
    session.warmPool = try Scheduler.parseWarmPool(try config.list("warm-pool") ?? [], catalog: catalog)
    session.meter.interval = try config.duration("meter-interval") ?? .seconds(300)
    session.meter.backfillLimit = try config.int("meter-backfill") ?? 12
    session.eventTTL = try config.duration("event-ttl") ?? .seconds(3600)
    guard session.eventTTL >= .seconds(1) else {
        throw ConfigurationError(code: .invalidValue, key: "event-ttl", source: nil, detail: "must be at least 1s, e.g. 1h")
    }
    session.autoscaleInterval = try config.duration("autoscale-interval") ?? .seconds(2)
    guard session.autoscaleInterval >= .seconds(1) else {
        throw ConfigurationError(code: .invalidValue, key: "autoscale-interval", source: nil, detail: "must be at least 1s, e.g. 2s")
    }
    session.scaleDownDelay = try config.duration("scale-down-delay") ?? .seconds(300)
    let scheduler = Scheduler(
        store: store, pipeline: Pipeline(catalog: catalog),
        configuration: .init(
            identity: try config.string("identity") ?? Scheduler.defaultIdentity(),
            electionName: try config.string("election") ?? Scheduler.defaultElectionName,
            leaseTTL: max(1, (try config.duration("lease-ttl") ?? .seconds(3)).components.seconds),
            session: session),
        logger: logger,
        onStatus: { status in try? SystemdNotifier().status(status) })
    let notifier = SystemdNotifier()
    let daemon = Daemon(
        services: [scheduler, WatchdogService(notifier: notifier, isHealthy: { true })],
        notifier: notifier, readyStatus: "campaigning", logger: logger)
    try await daemon.run()
} catch {
    FileHandle.standardError.write(Data("gpuplane-scheduler: \(error)\n".utf8))
    exit(1)
}
