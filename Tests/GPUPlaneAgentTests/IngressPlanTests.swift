import Foundation
import GPUPlaneAgent
import GPUPlaneCore
import Testing

/// Which port of a container the node-agent publishes: a model server's or a deployment
/// instance's serving port, else a pod's ingress port, never the other servicePorts.
struct IngressPlanTests {
    func replica(ingressPort: Int?, servingPort: Int? = nil) -> Replica {
        Replica(
            metadata: ObjectMeta(name: "shop.api", tenant: "acme", uid: "u1"),
            spec: ReplicaSpec(
                owner: OwnerReference(kind: .application, name: "shop", uid: "a"), role: "api", mode: nil, modelSlug: nil,
                gpus: 0, vramGB: 0, machineTypes: [], priority: .inference, image: "myorg/api:v1", ports: [8000, 9000],
                servingPort: servingPort, ingressPort: ingressPort),
            binding: Binding(node: "n1", gpuIndices: []))
    }

    @Test func thePathsPortIsTheOnlyOnePublished() {
        let plan = ContainerPlan(replica: replica(ingressPort: 8000), node: "n1", gatewayBaseURL: "http://gw")
        #expect(plan.ingressPort == 8000)
        #expect(plan.servingPort == nil)
        #expect(plan.publishedPort == 8000)
        // The engine spec publishes nothing by itself: the reconciler adds the one mapping.
        #expect(plan.spec.ports.isEmpty)
        let none = ContainerPlan(replica: replica(ingressPort: nil), node: "n1", gatewayBaseURL: "http://gw")
        #expect(none.publishedPort == nil)
        let serving = ContainerPlan(replica: replica(ingressPort: 8000, servingPort: 8000), node: "n1", gatewayBaseURL: "http://gw")
        #expect(serving.publishedPort == 8000 && serving.ingressPort == nil)
    }

    /// A container whose ingress port appears or changes is replaced (the hash covers it).
    @Test func theHashChangesOnlyWithAnIngressPort() {
        let without = ContainerPlan(replica: replica(ingressPort: nil), node: "n1", gatewayBaseURL: "http://gw")
        let with8000 = ContainerPlan(replica: replica(ingressPort: 8000), node: "n1", gatewayBaseURL: "http://gw")
        let with9000 = ContainerPlan(replica: replica(ingressPort: 9000), node: "n1", gatewayBaseURL: "http://gw")
        #expect(without.specHash != with8000.specHash)
        #expect(with8000.specHash != with9000.specHash)
    }
}
