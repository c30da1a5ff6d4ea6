import Foundation
import GPUPlaneLocal

/// `gpuplane-local [--example FILE] [--tls] [--keep-running]`: starts etcd, podman with fake GPUs and
/// the three daemons, applies the example as an Enterprise tenant, and shows it placed and
/// running, with what the container sees of its GPU; then applies the Mode 3 example and shows
/// its model server (the stand-in) ready, the pod running with NXL_INFERENCE_URL, and one chat
/// completion through that URL; then the CPU model example (`tiny-random-llama`, a real model
/// served by llama.cpp on CPU) and one completion from it; then the `path` example, reached at
/// its application URL.
let usage = """
    usage: gpuplane-local [--example FILE] [--tls] [--keep-running]

    Starts a whole gpuplane here (etcd, podman with 8 + 2 fake GPUs, the api-server, the
    scheduler and two node-agents), applies FILE as an Enterprise tenant and shows it placed
    and running, then applies examples/local-shared-model.yaml (Mode 3) and calls its model
    through the inference gateway, then applies examples/local-cpu-model.yaml (a pod using
    tiny-random-llama: the project's tiny random llama, fetched from a registry on loopback and
    served on CPU by llama.cpp; its text is nonsense) and calls it, then applies
    examples/local-app-url.yaml (an api GPU pod
    with path /api that reaches its db CPU pod as db.pod:5432) and GETs its application URL
    at /api/db; then stops everything.

      --example FILE   the application to apply first (default: examples/local-gpu-app.yaml)
      --tls            run it all over TLS: certificates from scripts/dev-certs, etcd on
                       https:// with client certificates, the api-server on HTTPS only,
                       agents verifying it with the CA
      --keep-running   leave the cluster up (prints the api-server URL and an admin token)
                       until Ctrl-C
      --help, -h       print this and exit

    """
let arguments = CommandLine.arguments.dropFirst()
if arguments.contains("--help") || arguments.contains("-h") {
    FileHandle.standardOutput.write(Data(usage.utf8))
    exit(0)
}
// Anything else is a mistake worth stopping for, not a reason to run the demo regardless.
do {
    var rest = arguments[...]
    while let argument = rest.popFirst() {
        if argument == "--keep-running" || argument == "--tls" { continue }
        if argument == "--example", rest.popFirst() != nil { continue }
        FileHandle.standardError.write(Data("gpuplane-local: unexpected argument '\(argument)'\n\n\(usage)".utf8))
        exit(2)
    }
}
let keepRunning = arguments.contains("--keep-running")
let tls = arguments.contains("--tls")
let example = arguments.firstIndex(of: "--example").flatMap { arguments.index(after: $0) < arguments.endIndex ? arguments[arguments.index(after: $0)] : nil }
    ?? "examples/local-gpu-app.yaml"
let sharedExample = "examples/local-shared-model.yaml"
let cpuModelExample = "examples/local-cpu-model.yaml"
let binaries = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()

/// Writes a line at once (no buffering, so a pipe or a file sees progress as it happens).
func out(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }
func say(_ line: String) { out("==> \(line)") }

/// Stops everything off the main thread: Foundation learns of its children's exits on the main
/// queue, which a blocked main thread would never drain.
func stop(_ cluster: LocalCluster) async {
    say("stopping")
    await TestEnvironment.offPool { cluster.shutdown() }
}

do {
    guard let manifest = try? String(contentsOfFile: example, encoding: .utf8) else {
        throw LocalCluster.Failure(description: "cannot read \(example)")
    }
    let cluster = try await LocalCluster.start(binaries: binaries, tls: tls, cpuModel: true, log: say)
    do {
    say("cluster up: api-server \(cluster.apiURL), node \(cluster.nodeName) with 8 fake H100s (dedicated), node \(LocalCluster.sharedNodeName) with 2 (shared); logs in \(cluster.directory.path)")
    let token = try await cluster.tenant("demo", plan: "enterprise")
    say("applying \(example) as tenant demo (enterprise)")
    let applied = try await cluster.call("POST", "/v1/applications", token: token, body: manifest)
    out(String(decoding: applied.body, as: UTF8.self))
    guard applied.status == 201 || applied.status == 200 else {
        throw LocalCluster.Failure(description: "apply answered \(applied.status)")
    }
    var replica: [String: Any] = [:]
    try await eventually("the replica is placed and running", timeout: 120, every: 0.5) {
        let items = try await cluster.json("GET", "/v1/replicas", token: token)["items"] as? [[String: Any]] ?? []
        replica = items.first ?? [:]
        return (replica["status"] as? [String: Any])?["phase"] as? String == "running"
    }
    let name = (replica["metadata"] as? [String: Any])?["name"] as? String ?? "?"
    let binding = replica["binding"] as? [String: Any] ?? [:]
    let status = replica["status"] as? [String: Any] ?? [:]
    say("REPLICA \(name)  NODE \(binding["node"] ?? "-")  GPUS \(binding["gpuIndices"] ?? "-")  PHASE \(status["phase"] ?? "-")  CONTAINER \(String(describing: status["containerID"] ?? "-").prefix(12))")
    let containers = try cluster.podman.podman(["ps", "--format", "{{.Names}}", "--filter", "name=gpuplane_demo_"]).split(separator: "\n")
    for container in containers {
        say("inside \(container):")
        out(try cluster.podman.podman(["logs", String(container)]))
    }
    if let shared = try? String(contentsOfFile: sharedExample, encoding: .utf8) {
        say("applying \(sharedExample) (Mode 3: a shared pinned model) as tenant demo")
        let applied = try await cluster.call("POST", "/v1/applications", token: token, body: shared)
        guard applied.status == 201 || applied.status == 200 else {
            throw LocalCluster.Failure(description: "apply answered \(applied.status): \(String(decoding: applied.body, as: UTF8.self))")
        }
        var server: [String: Any] = [:]
        try await eventually("a model server is ready", timeout: 120, every: 0.5) {
            server = (try await cluster.json("GET", "/v1/modelservers", token: cluster.adminToken)["items"] as? [[String: Any]])?.first ?? [:]
            return (server["status"] as? [String: Any])?["ready"] as? Bool == true
        }
        let serverName = (server["metadata"] as? [String: Any])?["name"] as? String ?? "?"
        let serverBinding = server["binding"] as? [String: Any] ?? [:]
        let endpoint = (server["status"] as? [String: Any])?["endpoint"] as? String ?? ""
        say("MODELSERVER \(serverName)  NODE \(serverBinding["node"] ?? "-")  GPUS \(serverBinding["gpuIndices"] ?? "-")  READY true  ENDPOINT \(endpoint)")
        say("GET \(endpoint)/v1/models (the stand-in model server, not vLLM):")
        out(try await cluster.get(endpoint + "/v1/models"))
        try await eventually("the Mode 3 pod runs", timeout: 120, every: 0.5) {
            let items = try await cluster.json("GET", "/v1/replicas", token: token)["items"] as? [[String: Any]] ?? []
            return items.contains {
                ($0["metadata"] as? [String: Any])?["name"] as? String == "hello-model.client"
                    && ($0["status"] as? [String: Any])?["phase"] as? String == "running"
            }
        }
        say("inside gpuplane_demo_hello-model.client:")
        let podLogs = try cluster.podman.podman(["logs", "gpuplane_demo_hello-model.client"])
        out(podLogs)
        if let line = podLogs.split(separator: "\n").first(where: { $0.hasPrefix("NXL_INFERENCE_URL=") }) {
            let url = String(line.dropFirst("NXL_INFERENCE_URL=".count))
            say("POST \(url)/chat/completions, as the pod would (no API key; the URL is owner-scoped):")
            var answer = (status: 0, body: Data())
            try await eventually("the inference gateway answers", timeout: 60, every: 0.5) {
                answer = try await cluster.post(url + "/chat/completions", json: #"{"model": "auto", "messages": [{"role": "user", "content": "Hello!"}]}"#)
                return answer.status == 200
            }
            out(String(decoding: answer.body, as: UTF8.self))
        }
    }
    if cluster.cpuModel != nil, let cpuExample = try? String(contentsOfFile: cpuModelExample, encoding: .utf8) {
        say("applying \(cpuModelExample) (Mode 3: tiny-random-llama, a real model on CPU: llama.cpp serving the project's tiny random llama, whose text is nonsense) as tenant demo")
        let applied = try await cluster.call("POST", "/v1/applications", token: token, body: cpuExample)
        guard applied.status == 201 || applied.status == 200 else {
            throw LocalCluster.Failure(description: "apply answered \(applied.status): \(String(decoding: applied.body, as: UTF8.self))")
        }
        var server: [String: Any] = [:]
        try await eventually("the tiny-random-llama server is ready (weights fetched, engine loaded)", timeout: 300, every: 0.5) {
            let items = try await cluster.json("GET", "/v1/modelservers", token: cluster.adminToken)["items"] as? [[String: Any]] ?? []
            server = items.first { ($0["spec"] as? [String: Any])?["slug"] as? String == "tiny-random-llama" } ?? [:]
            return (server["status"] as? [String: Any])?["ready"] as? Bool == true
        }
        let endpoint = (server["status"] as? [String: Any])?["endpoint"] as? String ?? ""
        say("MODELSERVER \((server["metadata"] as? [String: Any])?["name"] as? String ?? "?")  NODE \((server["binding"] as? [String: Any])?["node"] ?? "-")  READY true  ENDPOINT \(endpoint)")
        say("GET \(endpoint)/v1/models (llama.cpp's server):")
        out(try await cluster.get(endpoint + "/v1/models"))
        let client = "gpuplane_demo_cpu-model.client"
        var podLogs = ""
        try await eventually("the pod printed its NXL_INFERENCE_URL", timeout: 120, every: 0.5) {
            podLogs = (try? cluster.podman.podman(["logs", client])) ?? ""
            return podLogs.contains("NXL_INFERENCE_URL=http")
        }
        if let line = podLogs.split(separator: "\n").first(where: { $0.hasPrefix("NXL_INFERENCE_URL=") }) {
            let url = String(line.dropFirst("NXL_INFERENCE_URL=".count))
            say("POST \(url)/chat/completions, as the pod would (a real completion; random weights, so nonsense text):")
            let answer = try await cluster.post(
                url + "/chat/completions", json: #"{"model": "tiny-random-llama", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 16}"#)
            out(String(decoding: answer.body, as: UTF8.self))
        }
    }
    if let appURLExample = try? String(contentsOfFile: "examples/local-app-url.yaml", encoding: .utf8) {
        say("applying examples/local-app-url.yaml (a GPU api pod with path /api and a CPU db pod it reaches as db.pod:5432) as tenant demo; calling its URL")
        let answer = try await cluster.showApplicationURL(manifest: appURLExample, token: token, request: "/db")
        say("application URL \(answer.url); GET \(answer.requested) (no token, through the api-server's ingress):")
        out(answer.body)
    }
    if keepRunning {
        say("running; press Ctrl-C to stop (api-server \(cluster.apiURL), dashboard \(cluster.apiURL)/ui, admin token \(cluster.adminToken)\(cluster.caFile.map { ", CA \($0)" } ?? ""))")
        let stop = DispatchSemaphore(value: 0)
        signal(SIGINT) { _ in }
        let source = DispatchSource.makeSignalSource(signal: SIGINT)
        source.setEventHandler { stop.signal() }
        source.resume()
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async { stop.wait(); c.resume() }
        }
    }
    await stop(cluster)
    } catch {
        FileHandle.standardError.write(Data("gpuplane-local: \(error)\n--- logs ---\n\(cluster.logTails())\n".utf8))
        await stop(cluster)
        exit(1)
    }
} catch {
    FileHandle.standardError.write(Data("gpuplane-local: \(error)\n".utf8))
    exit(1)
}
