// swift-tools-version:6.0
import PackageDescription

/// The package's directory: linker inputs must be absolute paths.
let packageDirectory: String = {
    let path = #filePath
    guard let slash = path.lastIndex(of: "/") else { return "." }
    return String(path[..<slash])
}()

/// How the daemons are linked (lld): packed relative relocations (DT_RELR, glibc >= 2.36: the
/// megabytes of RELA entries the loader reads, and keeps resident, become kilobytes) and no
/// exported symbols (every library's symbol lookups searched the executable's). A daemon's
/// resident memory is a goal (docs/benchmarks.md): 3 MB less for an idle scheduler, static.
let compactLinking: [String] = [
    "-use-ld=lld", "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs", "-Xlinker", "--no-export-dynamic",
]

/// `compactLinking` with the functions the daemon ran in a bench placed first
/// (`Sources/<daemon>/symbol-order.txt`, made by scripts/symbol-order), so the code pages it
/// touches are few and adjacent: the kernel maps up to 64 KB of cached file pages around each
/// page that faults (a whole large folio, up to 2 MB, on kernels with large folios for ext4).
/// A stale list does no harm (lld skips names it does not find); SwiftPM does not relink when
/// only the list changes.
func orderedLinking(_ daemon: String) -> [String] {
    compactLinking + [
        "-Xlinker", "--symbol-ordering-file=\(packageDirectory)/Sources/\(daemon)/symbol-order.txt",
        "-Xlinker", "--no-warn-symbol-ordering",
    ]
}

/// gpuplane: a self-hosted GPU control plane. Executables are thin; every
/// concern lives in one library with one owner. See docs/architecture.md.
let package = Package(
    name: "gpuplane",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "gpuplane", targets: ["gpuplane"]),
        .executable(name: "gpuplane-bench", targets: ["gpuplane-bench"]),
        .executable(name: "gpuplane-api-server", targets: ["gpuplane-api-server"]),
        .executable(name: "gpuplane-scheduler", targets: ["gpuplane-scheduler"]),
        .executable(name: "gpuplane-node-agent", targets: ["gpuplane-node-agent"]),
        .executable(name: "gpuplane-hollow-nodes", targets: ["gpuplane-hollow-nodes"]),
        .library(name: "GPUPlaneCore", targets: ["GPUPlaneCore"]),
        .library(name: "GPUPlaneManifest", targets: ["GPUPlaneManifest"]),
        .library(name: "CurlHTTP", targets: ["CurlHTTP"]),
        .library(name: "EtcdClient", targets: ["EtcdClient"]),
        .library(name: "GPUPlaneStore", targets: ["GPUPlaneStore"]),
        .library(name: "GPUPlaneService", targets: ["GPUPlaneService"]),
        .library(name: "GPUPlaneScheduling", targets: ["GPUPlaneScheduling"]),
        .library(name: "GPUPlaneAgent", targets: ["GPUPlaneAgent"]),
        // The NVML stand-in, loaded with dlopen exactly like libnvidia-ml.so.1.
        .library(name: "FakeNVML", type: .dynamic, targets: ["FakeNVML"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        // HTTPS on the api-server (already built for Hummingbird's test client).
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
    ],
    targets: [
        // C system libraries, each touched only by the one Swift module that wraps it.
        .systemLibrary(
            name: "CCurl", pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev"])]),
        .target(name: "CCurlShim", dependencies: ["CCurl"]),
        // Threads, locks and text helpers over libc, without Foundation: the node-agent's
        // modules use FoundationEssentials only, which keeps ICU out of its resident set.
        .target(name: "CSystemShim"),
        // JSON written as the value is walked (no intermediate tree), byte-identical to
        // JSONEncoder with sorted keys: the api-server's and etcd client's hot encoding path.
        .target(name: "StreamingJSON", dependencies: ["GPUPlaneSystem"]),
        .target(name: "GPUPlaneSystem", dependencies: ["CSystemShim"]),
        // HTTP over libcurl on a dedicated thread (TCP or unix socket), unary and streaming.
        // The only module that touches CCurl/CCurlShim.
        .target(
            name: "CurlHTTP",
            dependencies: ["CCurlShim", "GPUPlaneSystem", .product(name: "Logging", package: "swift-log")]),
        .systemLibrary(
            name: "CYAML", pkgConfig: "yaml-0.1",
            providers: [.apt(["libyaml-dev"])]),
        .systemLibrary(
            name: "CSystemd", pkgConfig: "libsystemd",
            providers: [.apt(["libsystemd-dev"])]),

        // Resources, validation, catalog, plans, machine types, pricing. No I/O.
        .target(name: "GPUPlaneCore", dependencies: ["GPUPlaneSystem", "StreamingJSON"]),
        // YAML/JSON manifests → resources, with file:line:column on every error.
        .target(name: "GPUPlaneManifest", dependencies: ["GPUPlaneCore", "CYAML"]),
        // etcd v3 HTTP/JSON gateway over libcurl: KV, txn, lease, watch, election.
        .target(
            name: "EtcdClient",
            dependencies: ["CurlHTTP", "GPUPlaneSystem", "StreamingJSON", .product(name: "Logging", package: "swift-log")]),
        // Typed resources on etcd: CAS on resourceVersion, transactions, informers.
        .target(
            name: "GPUPlaneStore",
            dependencies: [
                "EtcdClient", "GPUPlaneCore", "GPUPlaneSystem", "StreamingJSON", .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]),
        // What every daemon needs: journald logging, sd_notify, config, metrics, lifecycle.
        .target(
            name: "GPUPlaneService",
            dependencies: [
                "CSystemd", "GPUPlaneSystem",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),
        // A daemon's own small HTTP(S) listener on HummingbirdCore (no router, no Foundation, so
        // the node-agent may link it): /metrics, /healthz and the routes a daemon adds; and the
        // TLS settings every listener shares (`tls-cert-file`, `tls-key-file`).
        .target(
            name: "GPUPlaneListener",
            dependencies: [
                "GPUPlaneService", "GPUPlaneSystem", "StreamingJSON",
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),
        // The REST front door: auth, admission, resources, watch, OpenAPI, the inference gateway.
        .target(
            name: "GPUPlaneAPI",
            dependencies: [
                "GPUPlaneCore", "GPUPlaneManifest", "GPUPlaneStore", "CurlHTTP", "GPUPlaneService", "GPUPlaneSystem", "GPUPlaneListener",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            resources: [.copy("openapi.json"), .copy("Dashboard")]),
        .executableTarget(
            name: "gpuplane-api-server", dependencies: ["GPUPlaneAPI"], exclude: ["symbol-order.txt"],
            linkerSettings: [.unsafeFlags(orderedLinking("gpuplane-api-server"))]),
        // The `gpuplane` command line, as a library so tests can drive it.
        .target(
            name: "GPUPlaneCLI",
            dependencies: [
                "GPUPlaneCore", "GPUPlaneManifest", "CurlHTTP",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        // Placement pipeline, preemption, leader election and the controllers.
        .target(
            name: "GPUPlaneScheduling",
            dependencies: [
                "GPUPlaneCore", "GPUPlaneStore", "EtcdClient", "GPUPlaneSystem", "GPUPlaneService", "GPUPlaneListener",
                .product(name: "Logging", package: "swift-log"), .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),
        // The scheduler daemon: flags/env/file configuration, journald, sd_notify, SIGTERM.
        .executableTarget(
            name: "gpuplane-scheduler",
            dependencies: [
                "GPUPlaneScheduling", "GPUPlaneService", "GPUPlaneStore", "GPUPlaneCore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            exclude: ["symbol-order.txt"],
            linkerSettings: [.unsafeFlags(orderedLinking("gpuplane-scheduler"))]),
        // NVML's published C types (no NVIDIA headers needed to build).
        .target(name: "CNVML"),
        // The node-agent: NVML through dlopen, the container engine, the reconciler.
        .target(
            name: "GPUPlaneAgent",
            dependencies: [
                "GPUPlaneCore", "GPUPlaneSystem", "CNVML", "CurlHTTP", "GPUPlaneService", "GPUPlaneListener",
                .product(name: "Logging", package: "swift-log"), .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),
        // The node-agent's idle footprint is a goal (docs/benchmarks.md). Linked like the other
        // daemons (`orderedLinking`: its ~2 MB of RELA entries become ~20 KB, and the functions
        // it runs come first).
        .executableTarget(
            name: "gpuplane-node-agent", dependencies: ["GPUPlaneAgent"], exclude: ["symbol-order.txt"],
            linkerSettings: [.unsafeFlags(orderedLinking("gpuplane-node-agent"))]),
        // Simulated node-agents (the agent's own API, heartbeat and watch code; no NVML, no
        // containers) for whole-system scale runs: `gpuplane-bench fleet`.
        .executableTarget(name: "gpuplane-hollow-nodes", dependencies: ["GPUPlaneAgent"]),
        // A C shared library exporting NVML's symbols, with GPUs from a file and injectable events.
        // Linked --as-needed: it is C only, and like the real library it must not load the Swift
        // runtime into the agent (a static agent would carry two runtimes).
        .target(
            name: "FakeNVML", dependencies: ["CNVML"],
            linkerSettings: [.unsafeFlags(["-Xlinker", "--as-needed"])]),
        // The local cluster of `gpuplane-local` (the README's first command): supervised child
        // processes, etcd, a podman service with fake CDI GPUs, the stand-in model server and the
        // three daemons on loopback. The tests' etcd and podman fixtures are these too.
        .target(name: "GPUPlaneLocal", dependencies: ["CurlHTTP", "GPUPlaneCore"]),
        // For tests and benchmarks: journald, and GPUPlaneLocal's fixtures re-exported.
        .target(name: "GPUPlaneTestSupport", dependencies: ["GPUPlaneLocal"]),
        // `gpuplane-local`: the whole control plane on one machine with fake GPUs.
        .executableTarget(name: "gpuplane-local", dependencies: ["GPUPlaneLocal"]),

        .executableTarget(name: "gpuplane", dependencies: ["GPUPlaneCLI"]),
        .executableTarget(
            name: "gpuplane-bench",
            dependencies: [
                "EtcdClient", "GPUPlaneStore", "GPUPlaneCore", "GPUPlaneScheduling", "GPUPlaneTestSupport",
                "GPUPlaneAPI", "CurlHTTP", "GPUPlaneManifest", "GPUPlaneService", "GPUPlaneSystem", "StreamingJSON",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),

        .testTarget(name: "GPUPlaneSystemTests", dependencies: ["GPUPlaneSystem"]),
        .testTarget(
            name: "StreamingJSONTests", dependencies: ["StreamingJSON", "GPUPlaneCore", "GPUPlaneManifest", "EtcdClient"]),
        .testTarget(name: "GPUPlaneCoreTests", dependencies: ["GPUPlaneCore"]),
        .testTarget(
            name: "GPUPlaneManifestTests", dependencies: ["GPUPlaneManifest", "GPUPlaneCore"]),
        .testTarget(name: "EtcdClientTests", dependencies: ["EtcdClient", "GPUPlaneTestSupport"]),
        .testTarget(
            name: "GPUPlaneStoreTests",
            dependencies: ["GPUPlaneStore", "GPUPlaneCore", "EtcdClient", "GPUPlaneTestSupport"]),
        .testTarget(
            name: "GPUPlaneServiceTests",
            dependencies: [
                "GPUPlaneService", "GPUPlaneTestSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),
        .testTarget(
            name: "GPUPlaneCLITests",
            dependencies: [
                "GPUPlaneCLI", "GPUPlaneCore", "GPUPlaneAPI", "GPUPlaneStore", "EtcdClient", "GPUPlaneTestSupport",
                .product(name: "Logging", package: "swift-log"),
            ]),
        // The whole system with the real executables (built by `swift build --build-tests`).
        .testTarget(name: "EndToEndTests", dependencies: ["GPUPlaneTestSupport", "EtcdClient", "CurlHTTP", "GPUPlaneSystem"]),
        // Generated hostile input against every parser of outside bytes (short in CI; the long
        // form is GPUPLANE_FUZZ_ITERATIONS=… swift test --filter FuzzTests).
        .testTarget(
            name: "FuzzTests",
            dependencies: ["GPUPlaneManifest", "GPUPlaneCore", "GPUPlaneAPI", "EtcdClient", "StreamingJSON", "GPUPlaneTestSupport", "GPUPlaneSystem"]),
        // charts/gpuplane rendered by Helm (chart_check.py, in the tools venv), its daemon
        // configuration read by the daemons' own code, its pods started here (pod_check.py).
        .testTarget(
            name: "GPUPlaneChartTests",
            dependencies: ["GPUPlaneAPI", "GPUPlaneScheduling", "GPUPlaneService", "GPUPlaneCore", "GPUPlaneTestSupport"],
            exclude: ["chart_check.py", "pod_check.py"]),
        .testTarget(
            name: "GPUPlaneAPITests",
            dependencies: [
                "GPUPlaneAPI", "GPUPlaneCore", "GPUPlaneStore", "EtcdClient", "CurlHTTP", "GPUPlaneTestSupport", "GPUPlaneSystem",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
            ]),
        .testTarget(
            name: "GPUPlaneSchedulingTests",
            dependencies: [
                "GPUPlaneScheduling", "GPUPlaneCore", "GPUPlaneStore", "EtcdClient", "CurlHTTP", "GPUPlaneTestSupport", "GPUPlaneService",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),
        .testTarget(
            name: "GPUPlaneAgentTests",
            dependencies: [
                "GPUPlaneAgent", "GPUPlaneCore", "GPUPlaneTestSupport", "FakeNVML", "CurlHTTP", "GPUPlaneAPI",
                "GPUPlaneStore", "EtcdClient", "GPUPlaneService", .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),
    ]
)

// Every function of the package's own modules in a section of its own. By default Swift gives
// only some functions their own section and puts the rest of a file's code (its private and
// internal functions, generic specializations) in one shared `.text`, which the daemons' link
// order (`orderedLinking`) can move only whole: one function a daemon runs would bring every
// function of its file onto the pages it keeps resident.
for target in package.targets where target.type == .regular || target.type == .executable {
    target.swiftSettings = (target.swiftSettings ?? []) + [.unsafeFlags(["-Xfrontend", "-function-sections"])]
}
