import Foundation
import GPUPlaneCore
import GPUPlaneScheduling
import GPUPlaneService
import Testing

/// The scheduler daemon's configuration: every key's default, and a value that cannot be used
/// stopping it with the key named.
@Suite struct SchedulerMainTests {
    static func configuration(
        environment: [String: String] = [:], arguments: [String] = []
    ) throws -> Scheduler.Configuration {
        let config = try Configuration(keys: SchedulerMain.keys, environment: environment, arguments: arguments)
        return try SchedulerMain.schedulerConfiguration(config, catalog: Fixture.catalog)
    }

    @Test func defaults() throws {
        let configuration = try Self.configuration()
        #expect(configuration.electionName == Scheduler.defaultElectionName)
        #expect(configuration.leaseTTL == 3)
        #expect(!configuration.identity.isEmpty)
        let session = configuration.session
        #expect(session.resyncInterval == .seconds(1))
        #expect(session.idleServerGrace == .seconds(60))
        #expect(session.warmPool.isEmpty)
        #expect(session.meter.interval == .seconds(300))
        #expect(session.meter.backfillLimit == 12)
        #expect(session.eventTTL == .seconds(3600))
        #expect(session.autoscaleInterval == .seconds(2))
        #expect(session.scaleDownDelay == .seconds(300))
        #expect(session.usageRetention == .seconds(400 * 86_400))
        // Each key declared once, etcd's connection keys among them.
        let names = SchedulerMain.keys.map(\.name)
        #expect(Set(names).count == names.count)
        #expect(Set(names).isSuperset(of: ["etcd.endpoints", "etcd.ca-file", "etcd.cert-file", "etcd.key-file", "etcd.username", "etcd.password-file", "lease-ttl"]))
    }

    @Test func valuesFromFlagsAndEnvironment() throws {
        let configuration = try Self.configuration(
            environment: ["GPUPLANE_EVENT_TTL": "10m", "GPUPLANE_IDENTITY": "s-7"],
            arguments: ["--warm-pool", "llama-3.1-8b=2", "--lease-ttl", "5s", "--meter-interval=1m", "--autoscale-interval", "3s", "--usage-retention", "90d"])
        #expect(configuration.identity == "s-7")
        #expect(configuration.leaseTTL == 5)
        #expect(configuration.session.warmPool == ["llama-3.1-8b": 2])
        #expect(configuration.session.meter.interval == .seconds(60))
        #expect(configuration.session.eventTTL == .seconds(600))
        #expect(configuration.session.autoscaleInterval == .seconds(3))
        #expect(configuration.session.usageRetention == .seconds(90 * 86_400))
    }

    @Test func aBadValueNamesItsKey() {
        let bad: [(String, [String: String], [String])] = [
            ("event-ttl", [:], ["--event-ttl", "500ms"]),
            ("autoscale-interval", ["GPUPLANE_AUTOSCALE_INTERVAL": "0s"], []),
            ("lease-ttl", [:], ["--lease-ttl", "soon"]),
            ("meter-backfill", ["GPUPLANE_METER_BACKFILL": "a dozen"], []),
            ("usage-retention", [:], ["--usage-retention", "0"]),
            ("usage-retention", ["GPUPLANE_USAGE_RETENTION": "a year"], []),
            ("warm-pool", [:], ["--warm-pool", "llama-3.1-8b"]),
            ("warm-pool", [:], ["--warm-pool", "no-such-model=1"]),
        ]
        for (key, environment, arguments) in bad {
            do {
                _ = try Self.configuration(environment: environment, arguments: arguments)
                Issue.record("\(key): \(arguments) \(environment) was accepted")
            } catch let error as ConfigurationError {
                #expect(error.code == .invalidValue, "\(error)")
                #expect(error.key == key, "\(error)")
                #expect(error.description.contains(key), "\(error)")
            } catch {
                Issue.record("\(key): not a ConfigurationError: \(error)")
            }
        }
    }
}
