import Foundation
import GPUPlaneCore
import GPUPlaneTestSupport
import Testing

@testable import GPUPlaneAgent

/// Host admission at the agent (issue 17, Security): whatever a replica is, the container the
/// real node-agent makes for it is not privileged, adds no capability and lacks the ones
/// ``ContainerEngine/droppedCapabilities`` names, runs with `no-new-privileges`, has network,
/// PID and IPC namespaces of its own, and no host path or device but what CDI injects for its
/// GPUs (the test's fake CDI spec injects none). Seen two ways: `podman inspect`, and the
/// container's PID 1 as the kernel reports it (`/proc/1/status`, `/proc/1/ns`).
@Suite(.timeLimit(.minutes(5))) struct AgentConfinementTests {
    /// Both engines' create bodies drop the capabilities and set no-new-privileges.
    @Test func createBodiesDropCapabilitiesAndEscalation() throws {
        var spec = ContainerEngine.ContainerSpec(name: "c", image: "localhost/busybox:1", command: ["true"])
        spec.gpuIndices = [0]
        let docker = try JSONSerialization.jsonObject(with: JSONEncoder().encode(DockerCreate(spec, labels: [:]))) as? [String: Any]
        let host = docker?["HostConfig"] as? [String: Any]
        #expect(host?["SecurityOpt"] as? [String] == ["no-new-privileges"])
        #expect(host?["CapDrop"] as? [String] == ["AUDIT_WRITE", "MKNOD", "NET_RAW"])
        #expect((host?["CapAdd"] as? [String])?.isEmpty == true)
        let libpod = try JSONSerialization.jsonObject(
            with: JSONEncoder().encode(LibpodCreate(spec, labels: [:], cdiKind: "nvidia.com/gpu"))) as? [String: Any]
        #expect(libpod?["no_new_privileges"] as? Bool == true)
        #expect(libpod?["cap_drop"] as? [String] == ["AUDIT_WRITE", "MKNOD", "NET_RAW"])
        #expect((libpod?["cap_add"] as? [String])?.isEmpty == true)
    }

    /// The capabilities a container may have: Podman 4's default set (CHOWN, DAC_OVERRIDE,
    /// FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP, NET_BIND_SERVICE, SYS_CHROOT, SETFCAP),
    /// as bits of `CapEff`.
    static let allowedCapabilities: [Int: String] = [
        0: "CHOWN", 1: "DAC_OVERRIDE", 3: "FOWNER", 4: "FSETID", 5: "KILL", 6: "SETGID", 7: "SETUID", 8: "SETPCAP",
        10: "NET_BIND_SERVICE", 18: "SYS_CHROOT", 31: "SETFCAP",
    ]

    @Test(.enabled(if: PodmanFixture.isAvailable, "needs root podman"))
    func everyReplicaContainerIsConfinedAsPodmanAndTheKernelSeeIt() async throws {
        try await withAgentWorld { world in
            // A Mode 1 GPU pod on two GPUs and a CPU pod.
            try await world.createReplica("gpu", mode: .dedicated, gpus: [0, 1], command: ["sleep", "100000"])
            try await world.createReplica("cpu", mode: nil, command: ["sleep", "100000"])
            world.startAgent()
            let hostNamespaces = try ["net", "pid", "ipc"].map { try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/\($0)") }
            for name in ["gpu", "cpu"] {
                try await world.waitForReplica(name, "running") { $0.status.phase == .running }
                let container = try #require(try await world.containers(of: name).first)
                let inspected = try await world.podman.podman(["inspect", "--type", "container", container.id])
                let object = try #require((try JSONSerialization.jsonObject(with: Data(inspected.utf8)) as? [[String: Any]])?.first)
                let host = try #require(object["HostConfig"] as? [String: Any])
                #expect(host["Privileged"] as? Bool == false, "\(name)")
                #expect((host["CapAdd"] as? [String] ?? []).isEmpty, "\(name): \(host["CapAdd"] ?? "")")
                #expect(host["NetworkMode"] as? String != "host", "\(name)")
                #expect(host["PidMode"] as? String != "host", "\(name)")
                #expect(host["IpcMode"] as? String != "host", "\(name)")
                #expect((host["Binds"] as? [String] ?? []).isEmpty, "\(name): \(host["Binds"] ?? "")")
                #expect((host["Devices"] as? [Any] ?? []).isEmpty, "\(name): \(host["Devices"] ?? "")")
                let binds = (object["Mounts"] as? [[String: Any]] ?? []).filter { $0["Type"] as? String == "bind" }
                #expect(binds.isEmpty, "\(name) mounts host paths: \(binds)")
                let effective = Set(object["EffectiveCaps"] as? [String] ?? [])
                let allowed = Set(Self.allowedCapabilities.values.map { "CAP_" + $0 })
                #expect(effective.isSubset(of: allowed), "\(name): \(effective.subtracting(allowed))")

                // The kernel's view of the container's first process.
                let status = try await world.podman.podman(["exec", container.id, "cat", "/proc/1/status"])
                func field(_ key: String) -> String? {
                    status.split(separator: "\n").first { $0.hasPrefix(key + ":") }
                        .map { $0.dropFirst(key.count + 1).trimmingCharacters(in: .whitespaces) }
                }
                #expect(field("NoNewPrivs") == "1", "\(name): \(status)")
                let capEff = try #require(field("CapEff").flatMap { UInt64($0, radix: 16) })
                let allowedMask = Self.allowedCapabilities.keys.reduce(UInt64(0)) { $0 | (1 << UInt64($1)) }
                #expect(capEff & ~allowedMask == 0, "\(name): CapEff \(String(capEff, radix: 16)) beyond \(String(allowedMask, radix: 16))")
                #expect(capEff & (1 << 13) == 0, "\(name) has NET_RAW")
                #expect(capEff & (1 << 21) == 0, "\(name) has SYS_ADMIN")
                let namespaces = try ["net", "pid", "ipc"].map {
                    try world.podman.podman(["exec", container.id, "readlink", "/proc/1/ns/\($0)"]).trimmingCharacters(in: .whitespacesAndNewlines)
                }
                for (inside, outside) in zip(namespaces, hostNamespaces) {
                    #expect(inside != outside && !inside.isEmpty, "\(name) shares the host's \(outside)")
                }
                // No host filesystem beyond the engine's own files (hosts, resolv.conf, hostname).
                let mounts = try await world.podman.podman(["exec", container.id, "cat", "/proc/self/mountinfo"])
                for line in mounts.split(separator: "\n") {
                    let parts = line.split(separator: " ")
                    guard parts.count > 4 else { continue }
                    let target = String(parts[4])
                    #expect(target != "/host" && !target.hasPrefix("/var/run/docker") && !target.hasPrefix("/run/podman"), "\(name): \(line)")
                }
            }
        }
    }
}
