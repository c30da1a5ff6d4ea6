import Foundation
import GPUPlaneLocal
import GPUPlaneTestSupport

extension ChildProcess {
    /// The built daemon `name` (`gpuplane-api-server`, `gpuplane-scheduler`) started on `etcd`
    /// with an empty configuration file, logging at `logLevel` to a file in `directory`.
    static func daemon(
        _ name: String, _ arguments: [String], etcd: EtcdFixture, in directory: URL, logLevel: String = "warning"
    ) throws -> ChildProcess {
        let emptyConfig = directory.appendingPathComponent("empty.conf")
        try "".write(to: emptyConfig, atomically: true, encoding: .utf8)
        return try ChildProcess(
            executable: LocalClusterTests.binaries.appendingPathComponent(name).path,
            arguments: ["--etcd.endpoints", etcd.endpoints[0], "--log-destination", "stderr", "--log-level", logLevel] + arguments,
            environment: ["GPUPLANE_CONFIG": emptyConfig.path], logFile: directory.appendingPathComponent("\(name).log"))
    }
}
