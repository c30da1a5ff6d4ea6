import GPUPlaneCore
import GPUPlaneManifest
import Testing

/// The rules on `path` that the ingress relies on: it is served on the first servicePort, matched
/// by whole segments, and names one pod of the application.
@Suite struct IngressPathRuleTests {
    @Test func aPathNeedsAServicePort() throws {
        let manifest = read(app(pod: "path: /api"))
        #expect(manifest.codes == [.invalidPath])
        let finding = try #require(manifest.first(.invalidPath))
        #expect(finding.path == "application.pods[0].path")
        #expect(finding.message.contains("servicePorts: [8000]"), "\(finding.message)")
        #expect(read(app(pod: "path: /api\nservicePorts: [8000]")).codes.isEmpty)
        #expect(read(app(pod: "servicePorts: [8000]")).codes.isEmpty, "ports without a path stay private, which is fine")
    }

    @Test func pathSegmentsArePlain() {
        for bad in ["/api//v1", "/api/../admin", "/./api", "/api?x=1", "/api#top", "/api%2Fv1"] {
            #expect(read(app(pod: "path: \"\(bad)\"\nservicePorts: [8000]")).codes == [.invalidPath], "\(bad)")
        }
        for good in ["/", "/api", "/api/", "/api/v1", "/v1.2/~user", "/a-b_c"] {
            #expect(read(app(pod: "path: \"\(good)\"\nservicePorts: [8000]")).codes.isEmpty, "\(good)")
        }
    }

    @Test func twoPodsCannotServeOnePath() throws {
        let manifest = read("""
            application:
              name: shop
              pods:
                - name: api
                  image: myorg/api:v1
                  path: /api
                  servicePorts: [8000]
                - name: api2
                  image: myorg/api:v2
                  path: /api/
                  servicePorts: [8000]
            """)
        #expect(manifest.codes == [.invalidPath])
        #expect(try #require(manifest.first(.invalidPath)).path == "application.pods[1].path")
    }

    @Test func theIngressPortIsTheFirstServicePortOfAPodWithAPath() throws {
        let planner = ReplicaPlanner(catalog: try Catalog.standard())
        let owner = OwnerReference(kind: .application, name: "shop", uid: "u")
        let withPath = Pod(name: "api", path: "/api", image: "a:1", servicePorts: [8000, 9000])
        let without = Pod(name: "db", image: "b:1", servicePorts: [5432])
        #expect(planner.replicaSpec(for: withPath, owner: owner).ingressPort == 8000)
        #expect(planner.replicaSpec(for: withPath, owner: owner).ports == [8000, 9000])
        #expect(planner.replicaSpec(for: without, owner: owner).ingressPort == nil)
    }
}
