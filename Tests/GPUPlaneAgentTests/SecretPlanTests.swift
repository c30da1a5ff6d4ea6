import Foundation
import GPUPlaneAgent
import GPUPlaneCore
import Testing

/// How secret vars enter a container's plan: by reference and version in the spec hash, never
/// by value; and how the runtime picks a registry login.
struct SecretPlanTests {
    func replica(secretEnv: [String: SecretReference]?, versions: [String: String]? = nil) -> Replica {
        var spec = ReplicaSpec(
            owner: OwnerReference(kind: .application, name: "app", uid: "a"), role: "api", mode: nil, modelSlug: nil,
            gpus: 0, vramGB: 0, machineTypes: [], priority: .inference, image: "myorg/api:v1", env: ["A": "b"])
        spec.secretEnv = secretEnv
        var replica = Replica(metadata: ObjectMeta(name: "app.api", tenant: "acme", uid: "u1"), spec: spec, binding: Binding(node: "n", gpuIndices: []))
        replica.secretVersions = versions
        return replica
    }

    func hash(_ replica: Replica) -> String { ContainerPlan(replica: replica, node: "n", gatewayBaseURL: "http://gw").specHash }

    @Test func theHashFollowsReferencesAndVersionsNotValues() {
        let none = replica(secretEnv: nil)
        #expect(hash(none) == hash(replica(secretEnv: [:])), "no secret vars: the hash of before")
        let reference = ["DB": SecretReference(secret: "db-url")]
        let first = replica(secretEnv: reference)
        #expect(hash(first) != hash(none))
        #expect(hash(replica(secretEnv: ["DB": SecretReference(secret: "db-url", key: "url")])) != hash(first))
        #expect(hash(replica(secretEnv: ["DB2": SecretReference(secret: "db-url")])) != hash(first))
        // A new version of the secret (a replaced value) is a new container.
        let v1 = replica(secretEnv: reference, versions: ["db-url": "v1"])
        let v2 = replica(secretEnv: reference, versions: ["db-url": "v2"])
        #expect(hash(v1) != hash(first) && hash(v1) != hash(v2))
        #expect(hash(v1) == hash(replica(secretEnv: reference, versions: ["db-url": "v1", "unrelated": "x"])))
        // The plan holds no secret value: the environment has only the plain vars.
        let plan = ContainerPlan(replica: v1, node: "n", gatewayBaseURL: "http://gw")
        #expect(plan.spec.environment == ["A": "b"])
    }

    @Test func credentialsArePickedByTheImagesRegistry() {
        let runtime = ReplicaRuntime(
            env: ["DB": "postgres://u:p@db"],
            registryCredentials: [
                RegistryCredential(secret: "a-hub", registry: "docker.io", username: "u1", password: "p1"),
                RegistryCredential(secret: "b-local", registry: "127.0.0.1:5000", username: "u2", password: "p2"),
                RegistryCredential(secret: "c-corp", registry: "Registry.Example.com", username: "u3", password: "p3"),
            ])
        #expect(runtime.credential(forImage: "busybox")?.secret == "a-hub")
        #expect(runtime.credential(forImage: "vllm/vllm-openai:latest")?.secret == "a-hub")
        #expect(runtime.credential(forImage: "index.docker.io/library/busybox")?.secret == "a-hub")
        #expect(runtime.credential(forImage: "127.0.0.1:5000/app:1")?.secret == "b-local")
        #expect(runtime.credential(forImage: "registry.example.com/team/app@sha256:abc")?.secret == "c-corp")
        #expect(runtime.credential(forImage: "localhost/app") == nil)
        #expect(runtime.credential(forImage: "127.0.0.1:5001/app") == nil)
        // Printing it shows names and registries, never a value.
        let printed = "\(runtime) \(runtime.registryCredentials) \(String(reflecting: runtime))"
        for value in ["postgres://u:p@db", "p1", "p2", "p3"] { #expect(!printed.contains(value), "\(printed)") }
        #expect(printed.contains("DB") && printed.contains("b-local"))
    }
}
