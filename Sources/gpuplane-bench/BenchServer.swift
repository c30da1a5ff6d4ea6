import EtcdClient
import Foundation
import GPUPlaneAPI
import GPUPlaneCore
import GPUPlaneService
import GPUPlaneStore
import GPUPlaneTestSupport
import Hummingbird
import Logging

/// One etcd member and one api-server (its own process, or in this one) for a benchmark, with
/// a bootstrap admin token; ``stop()`` takes them down.
final class BenchServer {
    let fixture: EtcdFixture
    let etcd: Etcd.Client
    let admin: String
    let deps: APIDependencies
    /// `http://127.0.0.1:<port>`.
    let base: String
    /// The api-server's process, when it runs as one.
    let process: ChildProcess?
    let logger: Logger
    private let task: Task<Void, any Error>?
    private let directory: URL

    /// `serverArguments` are added to the api-server process's command line (none in process).
    init(mode: APIBench.ServerMode, etcdArguments: [String] = [], name: String, serverArguments: [String] = []) async throws {
        // Before any store exists, so an in-process server's counters reach its /metrics.
        MetricsExporter.bootstrap()
        fixture = try await EtcdFixture.start(extraArguments: etcdArguments)
        etcd = try Etcd.Client(Etcd.Configuration(endpoints: fixture.endpoints, requestTimeout: .seconds(10)))
        admin = Tokens.generate()
        var logger = Logger(label: "gpuplane.api")
        logger.logLevel = .warning
        self.logger = logger
        deps = APIDependencies(store: ResourceStore(client: etcd), catalog: try Catalog.standard(), adminTokens: [admin], logger: logger)
        directory = try TestEnvironment.temporaryDirectory(prefix: name)
        switch mode {
        case .inProcess:
            // On a port the kernel chooses, known once it listens.
            let server = try await startAPIServer(deps)
            base = server.base
            task = server.task
            process = nil
        case .process:
            // A child process binds the port it is given, chosen free just before (it cannot
            // report a port the kernel chose).
            let port = TestEnvironment.freePort()
            base = "http://127.0.0.1:\(port)"
            task = nil
            process = try APIBench.launchServer(
                port: port, etcd: fixture.endpoints, adminToken: admin, directory: directory, arguments: serverArguments)
        }
    }

    func stop() {
        task?.cancel()
        process?.stop()
        fixture.shutdown()
        try? FileManager.default.removeItem(at: directory)
    }
}
