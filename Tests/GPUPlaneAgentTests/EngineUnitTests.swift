import Foundation
import Testing

@testable import GPUPlaneAgent

/// What the engine client decides without an engine: admission of specs, log framing, times.
struct EngineSpecTests {
    func spec(_ change: (inout ContainerEngine.ContainerSpec) -> Void = { _ in }) -> ContainerEngine.ContainerSpec {
        var spec = ContainerEngine.ContainerSpec(name: "ok-name_1.2", image: "localhost/busybox:1", command: ["true"])
        change(&spec)
        return spec
    }

    func field(_ spec: ContainerEngine.ContainerSpec) -> String? {
        do {
            try spec.validate()
            return nil
        } catch {
            return error.code == .invalidSpec ? (error.field ?? "?") : "wrong code \(error.code)"
        }
    }

    @Test func aPlainSpecIsValid() throws {
        try spec().validate()
        try spec {
            $0.gpuIndices = [0, 3]
            $0.ports = [.init(containerPort: 80, hostPort: 8080), .init(containerPort: 53, hostPort: 5353, hostIP: "::1", protocol: .udp)]
            $0.memoryLimitBytes = ContainerEngine.ContainerSpec.minimumMemoryBytes
            $0.environment = ["CUDA_VISIBLE_DEVICES": "0", "EMPTY": ""]
        }.validate()
    }

    @Test func refusals() {
        #expect(field(spec { $0.name = "" }) == "name")
        #expect(field(spec { $0.name = "-leading" }) == "name")
        #expect(field(spec { $0.name = "has/slash" }) == "name")
        #expect(field(spec { $0.name = String(repeating: "a", count: 129) }) == "name")
        #expect(field(spec { $0.image = "" }) == "image")
        #expect(field(spec { $0.image = "two words" }) == "image")
        #expect(field(spec { $0.command = ["a\0b"] }) == "command")
        #expect(field(spec { $0.environment = ["A=B": "x"] }) == "environment.A=B")
        #expect(field(spec { $0.environment = ["": "x"] }) == "environment.")
        // GPU visibility cannot be widened through the environment.
        #expect(field(spec { $0.environment = ["NVIDIA_VISIBLE_DEVICES": "all"] }) == "environment.NVIDIA_VISIBLE_DEVICES")
        #expect(field(spec { $0.environment = ["nvidia_driver_capabilities": "all"] }) == "environment.nvidia_driver_capabilities")
        #expect(field(spec { $0.gpuIndices = [1, 1] }) == "gpuIndices")
        #expect(field(spec { $0.gpuIndices = [-1] }) == "gpuIndices")
        #expect(field(spec { $0.memoryLimitBytes = 1024 }) == "memoryLimitBytes")
        #expect(field(spec { $0.ports = [.init(containerPort: 0, hostPort: 80)] }) == "ports[0]")
        #expect(field(spec { $0.ports = [.init(containerPort: 80, hostPort: 70000)] }) == "ports[0]")
        #expect(field(spec { $0.ports = [.init(containerPort: 80, hostPort: 80, hostIP: "localhost")] }) == "ports[0].hostIP")
        #expect(
            field(spec { $0.ports = [.init(containerPort: 80, hostPort: 80), .init(containerPort: 81, hostPort: 80)] })
                == "ports[1]")
        #expect(field(spec { $0.network = .none; $0.ports = [.init(containerPort: 80, hostPort: 80)] }) == "ports")
    }

    /// The spec's shape is the admission policy: it has no field for privileges, host
    /// namespaces, host mounts, capabilities or devices. A new field must be argued for here:
    /// `cpuLimitMilli` only confines (a CFS quota, like `memoryLimitBytes`); `networkName` joins
    /// a named bridge network (validated: never `host` or `none`); `shmSizeBytes` only sizes the
    /// container's own /dev/shm tmpfs (its IPC namespace stays private; EngineShmBodyTests);
    /// `weightsMount` is one host directory mounted read-only at /weights, set only by the
    /// reconciler from the node's weights cache or an operator's catalog host path, never from
    /// a manifest (checked below: read-only in both create bodies).
    @Test func theSpecCannotExpressForbiddenOptions() throws {
        let fields = Set(Mirror(reflecting: spec()).children.compactMap(\.label))
        #expect(
            fields == [
                "name", "image", "command", "entrypoint", "environment", "labels", "ports", "memoryLimitBytes",
                "gpuIndices", "network", "networkName", "cpuLimitMilli", "shmSizeBytes", "weightsMount",
            ])
        let mounted = spec { $0.weightsMount = "/var/lib/gpuplane/weights/entries/oci-sha256-ab" }
        let docker = try JSONSerialization.jsonObject(with: JSONEncoder().encode(DockerCreate(mounted, labels: [:]))) as? [String: Any]
        let binds = (docker?["HostConfig"] as? [String: Any])?["Binds"] as? [String]
        #expect(binds == ["/var/lib/gpuplane/weights/entries/oci-sha256-ab:/weights:ro"])
        let libpod = try JSONSerialization.jsonObject(with: JSONEncoder().encode(LibpodCreate(mounted, labels: [:], cdiKind: "x/gpu"))) as? [String: Any]
        let mounts = libpod?["mounts"] as? [[String: Any]]
        #expect(mounts?.count == 1 && mounts?.first?["destination"] as? String == "/weights")
        #expect((mounts?.first?["options"] as? [String])?.contains("ro") == true)
        #expect(field(spec { $0.weightsMount = "relative/path" }) == "weightsMount")
        #expect(field(spec { $0.weightsMount = "/a/../etc" }) == "weightsMount")
        #expect(Set(["bridge", "none"]) == Set([ContainerEngine.ContainerSpec.Network.bridge, .none].map(\.rawValue)))
    }

    @Test func createBodiesAreConfined() throws {
        let s = spec {
            $0.gpuIndices = [2, 3]
            $0.environment = ["A": "1"]
            $0.memoryLimitBytes = 64 << 20
            $0.ports = [.init(containerPort: 80, hostPort: 8080)]
        }
        let docker = try JSONSerialization.jsonObject(with: JSONEncoder().encode(DockerCreate(s, labels: ["l": "v"]))) as? [String: Any]
        let host = docker?["HostConfig"] as? [String: Any]
        #expect(host?["Privileged"] as? Bool == false)
        #expect(host?["NetworkMode"] as? String == "bridge")
        #expect(host?["IpcMode"] as? String == "private")
        #expect((host?["Binds"] as? [Any])?.isEmpty == true)
        #expect((host?["Devices"] as? [Any])?.isEmpty == true)
        let request = (host?["DeviceRequests"] as? [[String: Any]])?.first
        #expect(request?["Driver"] as? String == "nvidia")
        #expect(request?["DeviceIDs"] as? [String] == ["2", "3"])
        #expect((docker?["Env"] as? [String])?.contains("NVIDIA_VISIBLE_DEVICES=2,3") == true)

        let libpod = try JSONSerialization.jsonObject(
            with: JSONEncoder().encode(LibpodCreate(s, labels: [:], cdiKind: "nvidia.com/gpu"))) as? [String: Any]
        #expect(libpod?["privileged"] as? Bool == false)
        #expect((libpod?["netns"] as? [String: String])?["nsmode"] == "bridge")
        #expect((libpod?["pidns"] as? [String: String])?["nsmode"] == "private")
        #expect((libpod?["mounts"] as? [Any])?.isEmpty == true)
        #expect((libpod?["devices"] as? [[String: String]])?.map { $0["path"] } == ["nvidia.com/gpu=2", "nvidia.com/gpu=3"])
        #expect((libpod?["env"] as? [String: String])?["NVIDIA_VISIBLE_DEVICES"] == "void")
        #expect(ContainerEngine.Configuration(socketPath: "/x").cdiGPUKind == "nvidia.com/gpu")
    }

    @Test func violationsOfAnAdoptedContainer() {
        let profile = ContainerEngine.SecurityProfile(
            privileged: true, networkMode: "host", pidMode: "host", ipcMode: "host", hostMounts: ["/etc"],
            hostDevices: ["/dev/nvidia0"], addedCapabilities: ["SYS_ADMIN"], gpuDeviceRequests: [])
        #expect(
            profile.violations == [
                .privileged, .hostNetwork, .hostPID, .hostIPC, .hostMount("/etc"), .hostDevice("/dev/nvidia0"),
                .addedCapability("SYS_ADMIN"),
            ])
    }
}

struct EngineWireTests {
    func frame(_ stream: UInt8, _ text: String) -> [UInt8] {
        let payload = Array(text.utf8)
        let n = payload.count
        return [stream, 0, 0, 0, UInt8(n >> 24 & 0xff), UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)] + payload
    }

    /// `bytes` through one demuxer, `chunk` bytes at a time, and its end.
    func demuxed(_ bytes: [UInt8], inChunksOf chunk: Int, stamped: Bool) -> [LogDemuxer.Entry] {
        var demuxer = LogDemuxer(stamped: stamped)
        var entries: [LogDemuxer.Entry] = []
        var i = 0
        while i < bytes.count {
            let piece = Array(bytes[i..<min(i + chunk, bytes.count)])
            entries += piece.withUnsafeBytes { demuxer.entries($0) }
            i += chunk
        }
        return entries + demuxer.finishEntries()
    }

    @Test func demultiplexesWhateverTheChunking() {
        let bytes = frame(1, "one\ntw") + frame(2, "oops\n") + frame(1, "o\nthree") + frame(1, "\n") + frame(2, "tail")
        let expected: [ContainerEngine.LogLine] = [
            .init(stream: .stdout, text: "one"), .init(stream: .stderr, text: "oops"), .init(stream: .stdout, text: "two"),
            .init(stream: .stdout, text: "three"), .init(stream: .stderr, text: "tail"),
        ]
        for chunk in [1, 3, 7, 8, 9, bytes.count] {
            let lines = demuxed(bytes, inChunksOf: chunk, stamped: false).map(\.line)
            #expect(lines == expected, "chunk \(chunk)")
        }
    }

    @Test func stampedFramesGiveTheirSecondAndTheTextWithoutTheStamp() {
        // 2026-11-22T19:51:26Z is 1_795_377_086; a partial line keeps the second it began in.
        let bytes = frame(1, "2026-11-22T19:51:26Z one\n") + frame(2, "2026-11-22T19:51:26.5Z half") + frame(1, "2026-11-22T20:51:27+01:00 two\n")
            + frame(2, "2026-11-22T19:51:29Z  line\n") + frame(1, "no stamp\n")
        for chunk in [1, 5, bytes.count] {
            let entries = demuxed(bytes, inChunksOf: chunk, stamped: true)
            #expect(entries.map(\.line.text) == ["one", "two", "half line", "no stamp"], "chunk \(chunk)")
            #expect(entries.map(\.second) == [1_795_377_086, 1_795_377_087, 1_795_377_086, nil], "chunk \(chunk)")
            #expect(entries.map(\.line.stream) == [.stdout, .stdout, .stderr, .stdout])
        }
        var raw = LogDemuxer(stamped: true)
        let rawEntries = Array("2026-11-22T19:51:26Z hello\r\n2026-11-22T19:51:27Z end".utf8).withUnsafeBytes { raw.entries($0) } + raw.finishEntries()
        #expect(rawEntries.map(\.line.text) == ["hello", "end"])
        #expect(rawEntries.map(\.second) == [1_795_377_086, 1_795_377_087])
    }

    @Test func aCursorSkipsWhatAResumedReadGivesAgain() {
        var cursor = LogCursor()
        func line(_ text: String) -> ContainerEngine.LogLine { .init(stream: .stdout, text: text) }
        func admitted(_ lines: [(String, Int64?)]) -> [String] {
            lines.flatMap { cursor.admit(line($0.0), second: $0.1) }.map(\.text)
        }
        // A follow with a tail began mid-second: it delivered b and c of second 11 (a was
        // before its tail), then ended early.
        #expect(admitted([("z", 10), ("b", 11), ("c", 11)]) == ["z", "b", "c"])
        let first = cursor.resume()
        #expect(first == 11)
        // The read from second 11 lists a, b, c again, then what the follow missed.
        #expect(admitted([("a", 11), ("b", 11), ("c", 11), ("d", 11), ("e", 12)]) == ["d", "e"])
        #expect(cursor.endOfRead().isEmpty)
        // Again: only e was delivered in second 12; an older line is dropped.
        let second = cursor.resume()
        #expect(second == 12)
        #expect(admitted([("d", 11), ("e", 12), ("f", 12), ("g", 13)]) == ["f", "g"])
        #expect(cursor.endOfRead().isEmpty)
        // The delivered lines never come by (the log rotated): the held ones are delivered at
        // the next second, or at the read's end.
        _ = cursor.resume()
        #expect(admitted([("x", 13), ("y", 14)]) == ["x", "y"])
        _ = cursor.resume()
        #expect(admitted([("q", 14)]).isEmpty)
        #expect(cursor.endOfRead().map(\.text) == ["q"])
        // Nothing delivered: nothing to resume from; unstamped lines always pass.
        var empty = LogCursor()
        let none = empty.resume()
        #expect(none == nil)
        #expect(empty.admit(line("u"), second: nil).map(\.text) == ["u"])
    }

    @Test func rawStreamsFromTTYContainers() {
        let bytes = Array("hello\r\nworld\nend".utf8)
        let lines = demuxed(bytes, inChunksOf: bytes.count, stamped: false).map(\.line)
        #expect(lines.map(\.text) == ["hello", "world", "end"])
    }

    @Test func rfc3339() {
        let base = Date(timeIntervalSince1970: 1_795_377_086)  // 2026-11-22T19:51:26Z
        #expect(RFC3339.parse("2026-11-22T19:51:26Z") == base)
        #expect(abs((RFC3339.parse("2026-11-22T19:51:26.179133997Z")?.timeIntervalSince(base) ?? 0) - 0.179133997) < 1e-6)
        #expect(RFC3339.parse("2026-11-22T20:51:26+01:00") == base)
        #expect(RFC3339.parse("2026-11-22T18:51:26.5-01:00") == base.addingTimeInterval(0.5))
        #expect(RFC3339.parse("0001-01-01T00:00:00Z") == nil)
        #expect(RFC3339.parse("yesterday") == nil)
    }

    @Test func statusWords() {
        #expect(ContainerEngine.ContainerState.Status(engineWord: "configured") == .created)
        #expect(ContainerEngine.ContainerState.Status(engineWord: "stopped") == .exited)
        #expect(ContainerEngine.ContainerState.Status(engineWord: "Running") == .running)
        #expect(ContainerEngine.ContainerState.Status(engineWord: "weird") == .unknown)
    }

    @Test func anAbsentSocketIsUnavailable() async throws {
        let engine = ContainerEngine.Client(
            ContainerEngine.Configuration(
                socketPath: "/nonexistent/\(UUID()).sock", maxRetries: 1, retryBackoff: .milliseconds(1)))
        await #expect {
            try await engine.ping()
        } throws: { ($0 as? EngineError)?.code == .unavailable }
    }
}
