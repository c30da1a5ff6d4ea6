import EtcdClient
import Foundation
import GPUPlaneAPI
import GPUPlaneCLI
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneTestSupport
import Logging
import Testing

/// An api-server's dependencies on `etcd` for the CLI's tests: `admin` its bootstrap token,
/// secrets sealed with the test key file, its logs quiet.
func apiDependencies(_ etcd: EtcdFixture, admin: String) throws -> APIDependencies {
    let client = try Etcd.Client(Etcd.Configuration(endpoints: etcd.endpoints))
    var logger = Logger(label: "gpuplane.api")
    logger.logLevel = .critical
    var deps = APIDependencies(store: ResourceStore(client: client), catalog: try Catalog.standard(), adminTokens: [admin], logger: logger)
    deps.secretKeys = try SecretKeyring.load(path: try TestEnvironment.secretKeyFile().path)
    return deps
}

/// `gpuplane apply/get/delete` against a live api-server on real etcd.
@Suite(.serialized, .timeLimit(.minutes(5))) struct OnlineCommandTests {
    /// One etcd and api-server for the suite, with a tenant on `plan` and its token.
    actor Server {
        static let shared = Server()
        /// The one start-up, shared by every caller: an actor is re-entered at each `await`, so
        /// two suites asking at once would otherwise start two servers, and the first one's etcd
        /// would stop when the second replaced it.
        private var starting: Task<(base: String, admin: String, etcd: EtcdFixture), any Error>?

        func get() async throws -> (base: String, admin: String) {
            let task = starting ?? Task { try await Self.start() }
            starting = task
            let started = try await task.value
            return (started.base, started.admin)
        }

        private static func start() async throws -> (base: String, admin: String, etcd: EtcdFixture) {
            let etcd = try await EtcdFixture.start()
            let admin = Tokens.generate()
            let base = try await startAPIServer(try apiDependencies(etcd, admin: admin)).base
            try await eventually("api-server answers") { try await APIClient(base: base, token: nil).call(.get, "/healthz").status == 200 }
            return (base, admin, etcd)
        }
    }

    func tenant(_ plan: Plan) async throws -> (name: String, client: APIClient) {
        let (base, admin) = try await Server.shared.get()
        let name = "cli-" + UUID().uuidString.prefix(8).lowercased()
        let asAdmin = APIClient(base: base, token: admin)
        _ = try await asAdmin.json(.post, "/v1/tenants", body: Data(#"{"name": "\#(name)", "plan": "\#(plan.rawValue)"}"#.utf8))
        let token = try await asAdmin.json(.post, "/v1/tokens", body: Data(#"{"tenant": "\#(name)", "role": "user"}"#.utf8))["token"].string
        return (name, APIClient(base: base, token: token))
    }

    static let manifest = """
        # an application and a deployment in one file
        application:
          name: web
          pods:
            - name: api
              image: myorg/api:v1
              gpu: {enabled: true, model: llama-3.1-8b}
        ---
        deployment:
          model_name: chat-x
          gpu: A100-80GB
          num_gpus: 1
          max_batch_size: 8
          hf: {repo: org/chat-x-7b}
          settings: {min_instances: 1, max_instances: 2}
        """

    @Test func applyCreatesThenConfiguresEveryDocument() async throws {
        let (tenant, client) = try await tenant(.pro)
        let first = try await ApplyCommand.apply(data: Data(Self.manifest.utf8), file: "app.yaml", client: client)
        #expect(first.ok)
        #expect(first.lines == ["application/web created", "deployment/chat-x created"])
        let again = try await ApplyCommand.apply(data: Data(Self.manifest.utf8), file: "app.yaml", client: client)
        #expect(again.ok)
        #expect(again.lines == ["application/web configured", "deployment/chat-x configured (settings; the rest of a deployment is fixed at creation)"])

        let replicas = try await GetCommand.render(kind: .replicas, name: nil, output: .table, client: client).split(separator: "\n")
        #expect(replicas.first?.hasPrefix("NAME") == true && replicas.first?.contains("PHASE") == true)
        #expect(replicas.dropFirst().map { String($0.prefix { $0 != " " }) }.sorted() == ["deploy.chat-x.0", "web.api"])
        let deployments = try await GetCommand.render(kind: .deployments, name: nil, output: .table, client: client)
        #expect(deployments.contains("\(tenant)/chat-x") && deployments.contains("1×A100-80GB") && deployments.contains("1-2"), "\(deployments)")
        let yaml = try await GetCommand.render(kind: .applications, name: "web", output: .yaml, client: client)
        #expect(yaml.contains("  name: web\n") && yaml.contains("image: \"myorg/api:v1\""), "\(yaml)")
        let json = try await GetCommand.render(kind: .applications, name: "web", output: .json, client: client)
        #expect(JSONValue.parse(Data(json.utf8))?.at("metadata.tenant").string == tenant)

        let app = try await DescribeCommand.render(kind: .applications, name: "web", client: client)
        #expect(app.contains("Application: web") && app.contains("api: myorg/api:v1, gpu llama-3.1-8b"), "\(app)")
        #expect(app.contains("  NAME") && app.contains("web.api") && !app.contains("deploy.chat-x.0"), "\(app)")
        let deployment = try await DescribeCommand.render(kind: .deployments, name: "chat-x", client: client)
        #expect(deployment.contains("Deployment:  \(tenant)/chat-x") && deployment.contains("1 × A100-80GB, max_batch_size 8"), "\(deployment)")
        #expect(deployment.contains("(min 1, max 2)") && deployment.contains("deploy.chat-x.0") && !deployment.contains("web.api"), "\(deployment)")
    }

    @Test func refusalsPointAtTheFilesLines() async throws {
        let (_, client) = try await tenant(.free)
        // The Free plan may only use `auto`: the server's 403 names the field, at the file's line
        // (the second document starts on line 4).
        let yaml = "application:\n  name: ok\n  pods: [{name: a, image: x:1}]\n---\napplication:\n  name: paid\n  pods:\n    - name: a\n      image: x:1\n      gpu: {enabled: true, model: llama-3.1-8b}\n"
        let result = try await ApplyCommand.apply(data: Data(yaml.utf8), file: "two.yaml", client: client)
        #expect(!result.ok)
        #expect(result.lines.first == "application/ok created")
        let refusal = try #require(result.lines.dropFirst().first)
        #expect(refusal.hasPrefix("two.yaml:10:"), "\(result.lines)")
        #expect(refusal.contains("error: application.pods[0].gpu.model"), "\(refusal)")
        // Broken YAML is reported from the file without a round trip, also at its own line.
        let broken = try await ApplyCommand.apply(data: Data("application:\n  name: x\n  pods: [\n".utf8), file: "b.yaml", client: client)
        #expect(!broken.ok)
        #expect(broken.lines.first?.hasPrefix("b.yaml:") == true, "\(broken.lines)")
        // Without a token: the error says how to give one.
        let anonymous = APIClient(base: client.base, token: nil)
        await #expect(throws: CLIError.self) { try await GetCommand.render(kind: .applications, name: nil, output: .table, client: anonymous) }
        do {
            _ = try await GetCommand.render(kind: .applications, name: nil, output: .table, client: anonymous)
        } catch let error as CLIError {
            #expect(error.description.contains("HTTP 401") && error.description.contains("--token"))
        }
    }

    /// The real executable, as a user runs it: flags, environment, exit codes.
    @Test func theExecutableAppliesGetsAndDeletes() async throws {
        let (_, client) = try await tenant(.pro)
        let token = try #require(client.token)
        let directory = try TestEnvironment.temporaryDirectory(prefix: "cli")
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("app.yaml")
        try Self.manifest.write(to: file, atomically: true, encoding: .utf8)
        let tokenFile = directory.appendingPathComponent("token")
        try token.write(to: tokenFile, atomically: true, encoding: .utf8)
        func gpuplane(_ arguments: [String]) async throws -> (status: Int32, output: String) {
            try await TestEnvironment.offPool {
                try Command.run(
                    Self.executable.path, arguments, environment: ["GPUPLANE_SERVER": client.base, "GPUPLANE_TOKEN_FILE": tokenFile.path],
                    inheritEnvironment: false)
            }
        }
        let applied = try await gpuplane(["apply", "-f", file.path])
        #expect(applied.status == 0)
        #expect(applied.output == "application/web created\ndeployment/chat-x created\n")
        let listed = try await gpuplane(["get", "apps"])
        #expect(listed.status == 0 && listed.output.contains("web"), "\(listed.output)")
        #expect(try await gpuplane(["delete", "app", "web"]).output == "application/web deleted\n")
        let gone = try await gpuplane(["get", "application", "web"])
        #expect(gone.status == 1)
        #expect(gone.output.contains("not found") && gone.output.contains("HTTP 404"), "\(gone.output)")
        let unknown = try await gpuplane(["get", "pods"])
        #expect(unknown.status != 0 && unknown.output.contains("pods"), "\(unknown.output)")
    }

    /// `gpuplane`, built next to the test bundle.
    static var executable: URL {
        var url = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        while url.pathComponents.count > 1, !FileManager.default.fileExists(atPath: url.appendingPathComponent("gpuplane").path) {
            url.deleteLastPathComponent()
        }
        return url.appendingPathComponent("gpuplane")
    }
}
