import Foundation
@testable import GPUPlaneAgent
import GPUPlaneCore
import Testing

/// The pod network's pure parts: subnets, the api-server's view, the rules and hosts files.
struct PodNetworkRulesTests {
    func replica(_ tenant: String, _ app: String, _ pod: String, node: String?, ip: String?, phase: ReplicaStatus.Phase = .running) -> Replica {
        var status = ReplicaStatus(phase: phase)
        status.podIP = ip
        return Replica(
            metadata: ObjectMeta(name: "\(app).\(pod)", tenant: tenant, uid: "\(tenant)-\(app)-\(pod)"),
            spec: ReplicaSpec(
                owner: OwnerReference(kind: .application, name: app, uid: "u-\(app)"), role: pod, mode: nil, modelSlug: nil,
                gpus: 0, vramGB: 0, machineTypes: [], priority: .inference, image: "busybox", env: [:]),
            binding: node.map { Binding(node: $0, gpuIndices: []) }, status: status)
    }

    func node(_ name: String, address: String?, subnet: String?) -> Node {
        var spec = NodeSpec(machineType: "cpu", gpus: [], address: address)
        spec.podSubnet = subnet
        return Node(metadata: ObjectMeta(name: name), spec: spec, status: NodeStatus())
    }

    @Test func cidrs() throws {
        let subnet = try #require(IPv4CIDR("10.251.3.0/24"))
        #expect(subnet.description == "10.251.3.0/24")
        #expect(subnet.contains("10.251.3.77") && !subnet.contains("10.251.4.1"))
        #expect(subnet.address(at: 1) == "10.251.3.1")
        #expect(IPv4CIDR("10.251.3.1/24") == nil, "host bits set")
        #expect(IPv4CIDR("10.251.3.0/33") == nil && IPv4CIDR("10.251.3/24") == nil && IPv4CIDR("10.251.3.256/24") == nil)
        let range = try #require(IPv4CIDR("10.251.0.0/16"))
        #expect(range.overlaps(subnet) && subnet.overlaps(range))
        #expect(try #require(IPv4CIDR("10.251.4.0/24")).overlaps(subnet) == false)
    }

    /// A node learns the pods of the applications it runs a pod of, and nothing else.
    @Test func viewNamesOnlyTheApplicationsTheNodeRuns() {
        let replicas = [
            replica("t1", "chat", "db", node: "n1", ip: "10.251.1.5"),
            replica("t1", "chat", "api", node: "n2", ip: "10.251.2.7"),
            replica("t2", "prober", "probe", node: "n2", ip: "10.251.2.8"),
            replica("t1", "other", "x", node: "n3", ip: "10.251.3.2"),
            replica("t1", "chat", "worker", node: "n3", ip: nil, phase: .starting),
        ]
        let nodes = [
            node("n1", address: "10.0.0.2", subnet: "10.251.1.0/24"), node("n2", address: "10.0.0.3", subnet: "10.251.2.0/24"),
            node("n3", address: nil, subnet: "10.251.3.0/24"),
        ]
        let n1 = PodNetworkView.make(for: "n1", nodes: nodes, replicas: replicas)
        #expect(n1.routes.map(\.node) == ["n2"], "n3 has no address; n1 is itself")
        #expect(n1.pods.map(\.ip) == ["10.251.2.7", "10.251.1.5"])
        #expect(!n1.pods.contains { $0.tenant == "t2" })
        let n2 = PodNetworkView.make(for: "n2", nodes: nodes, replicas: replicas)
        #expect(Set(n2.pods.map(\.group)) == ["t1/chat", "t2/prober"])
        let n4 = PodNetworkView.make(for: "n4", nodes: nodes, replicas: replicas)
        #expect(n4.pods.isEmpty)
    }

    @Test func rulesAcceptOnlyTheSameApplication() throws {
        let settings = PodNetworkSettings(
            subnet: try #require(IPv4CIDR("10.251.1.0/24")), clusterCIDR: try #require(IPv4CIDR("10.251.0.0/16")))
        let db = LocalPod(group: "t1/chat", pod: "db", containerID: "c1", ip: "10.251.1.5", hostsPath: nil)
        let probe = LocalPod(group: "t2/prober", pod: "probe", containerID: "c2", ip: "10.251.1.6", hostsPath: nil)
        let view = PodNetworkView(routes: [], pods: [
            .init(tenant: "t1", application: "chat", pod: "api", replica: "chat.api", node: "n2", ip: "10.251.2.7"),
        ])
        let pods = PodNetwork.merged(view: view, local: [db, probe])
        let rules = PodNetwork.rules(settings: settings, local: [db, probe], pods: pods)
        let lines = rules.split(separator: "\n").map(String.init)
        #expect(lines.contains("-A GPUPLANE-PODS -s 10.251.2.7/32 -d 10.251.1.5/32 -j ACCEPT"))
        #expect(!lines.contains { $0.contains("-s 10.251.1.6/32") || $0.contains("-d 10.251.1.6/32") }, "\(rules)")
        #expect(lines.firstIndex(of: "-A GPUPLANE-PODS -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")! < lines.firstIndex(of: "-A GPUPLANE-PODS -s 10.251.0.0/16 -d 10.251.1.0/24 -j DROP")!)
        #expect(lines.contains("-A GPUPLANE-PODS-NAT -s 10.251.0.0/16 -d 10.251.0.0/16 -j ACCEPT"))

        let hosts = PodNetwork.hostsFile(for: db, pods: pods)
        #expect(hosts.contains("10.251.2.7\tapi.pod\n") && hosts.contains("10.251.1.5\tdb.pod\n"))
        #expect(!hosts.contains("probe.pod"))
        #expect(!PodNetwork.hostsFile(for: probe, pods: pods).contains("db.pod"))
    }
}
