import GPUPlaneService
import Testing

/// What `--help` prints for a daemon's keys (``Configuration/usage(program:keys:defaultConfigFile:)``)
/// and when it is asked for (``Configuration/helpRequested(_:)``).
@Suite struct ConfigurationUsageTests {
    static let keys: [ConfigurationKey] = [
        .init("listen-port", .int, default: "8080", help: "port to listen on"),
        .init("etcd.endpoints", .list, default: "http://127.0.0.1:2379", help: "etcd client URLs"),
        .init("token-file", .string, required: true, help: "the token"),
        .init("identity", .string, help: "a name"),
        .init("warm-pool", .list, default: "", help: "slug=count"),
        .init("lease", .duration, default: "3s"),
        .init("verbose", .bool, default: "false", help: "more logs"),
    ]

    @Test func everyKeyIsListedWithItsDefaultAndVariable() {
        let usage = Configuration.usage(program: "gpuplane-x", keys: Self.keys, defaultConfigFile: "/etc/gpuplane/x.conf")
        #expect(usage.hasPrefix("usage: gpuplane-x [--config PATH]"))
        #expect(usage.contains("  --listen-port N\n      port to listen on\n      (default: 8080; GPUPLANE_LISTEN_PORT)\n"))
        #expect(usage.contains("  --etcd.endpoints A,B,…\n      etcd client URLs\n      (default: http://127.0.0.1:2379; GPUPLANE_ETCD_ENDPOINTS)\n"))
        #expect(usage.contains("  --token-file TEXT\n      the token\n      (required; GPUPLANE_TOKEN_FILE)\n"))
        #expect(usage.contains("  --identity TEXT\n      a name\n      (optional; GPUPLANE_IDENTITY)\n"))
        #expect(usage.contains("  --warm-pool A,B,…\n      slug=count\n      (default: \"\" (empty); GPUPLANE_WARM_POOL)\n"))
        #expect(usage.contains("  --lease DURATION\n      (default: 3s; GPUPLANE_LEASE)\n"))
        #expect(usage.contains("  --verbose [true|false]\n      more logs\n      (default: false; GPUPLANE_VERBOSE)\n"))
        #expect(usage.contains("  --config PATH\n      the configuration file (default: /etc/gpuplane/x.conf; GPUPLANE_CONFIG)\n"))
        #expect(usage.contains("/etc/gpuplane/x.conf when it exists"))
        #expect(usage.hasSuffix("  --help, -h\n      print this and exit\n"))
    }

    @Test func helpIsAskedForBeforeAnyDoubleDash() {
        #expect(Configuration.helpRequested(["--help"]))
        #expect(Configuration.helpRequested(["-h"]))
        #expect(Configuration.helpRequested(["--port", "1", "--help"]))
        #expect(!Configuration.helpRequested(["--", "--help"]))
        #expect(!Configuration.helpRequested(["--helpful"]))
        #expect(!Configuration.helpRequested([]))
    }
}
