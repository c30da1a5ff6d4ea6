#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

extension ContainerEngine {
    /// Which engine serves the socket.
    public enum Kind: String, Sendable, Hashable {
        /// Docker Engine (Moby).
        case docker
        /// Podman 4 or later, whose libpod API is used where Docker's compat API falls short.
        case podman
    }

    /// What `GET /version` told about the engine.
    public struct EngineInfo: Sendable, Hashable {
        /// Docker or Podman.
        public var kind: Kind
        /// The engine's version, e.g. `4.3.1` or `28.2.2`.
        public var version: String
        /// The Docker API version it serves, e.g. `1.41`.
        public var apiVersion: String
    }

    /// What a container is doing.
    public struct ContainerState: Sendable, Hashable {
        /// The engine's status word, normalised across engines.
        public enum Status: String, Sendable, Hashable {
            /// Created, never started.
            case created
            /// Running.
            case running
            /// Paused.
            case paused
            /// Being restarted by the engine.
            case restarting
            /// Being removed.
            case removing
            /// Exited; see ``ContainerState/exitCode``.
            case exited
            /// Dead (the engine failed to remove or stop it).
            case dead
            /// A word this client does not know.
            case unknown

            init(engineWord: String) {
                switch engineWord.lowercased() {
                case "created", "configured", "initialized": self = .created
                case "running": self = .running
                case "paused": self = .paused
                case "restarting": self = .restarting
                case "removing": self = .removing
                case "exited", "stopped", "stopping": self = .exited
                case "dead": self = .dead
                default: self = .unknown
                }
            }
        }

        /// The status.
        public var status: Status
        /// The exit code of the last run (0 while running; 137 after SIGKILL).
        public var exitCode: Int
        /// Whether the kernel's OOM killer ended the last run.
        public var oomKilled: Bool
        /// When the last run started; nil when never started.
        public var startedAt: Date?
        /// When the last run ended; nil while running or never started.
        public var finishedAt: Date?
        /// The engine's error about the last start, when any.
        public var error: String?

        /// Whether the container runs.
        public var isRunning: Bool { status == .running }
    }

    /// Something a container has that host admission forbids.
    public enum AdmissionViolation: Sendable, Hashable {
        /// It runs privileged.
        case privileged
        /// It shares the host's network namespace.
        case hostNetwork
        /// It shares the host's PID namespace.
        case hostPID
        /// It shares the host's IPC namespace.
        case hostIPC
        /// It mounts this host path.
        case hostMount(String)
        /// It has this host device.
        case hostDevice(String)
        /// It was given this capability beyond the engine's default set.
        case addedCapability(String)
    }

    /// How a container is confined, as the engine reports it.
    public struct SecurityProfile: Sendable, Hashable {
        /// Whether it runs privileged.
        public var privileged: Bool
        /// The network mode (`bridge`, `none`, `host`, …).
        public var networkMode: String
        /// The PID namespace mode (`""`/`private` or `host`).
        public var pidMode: String
        /// The IPC namespace mode (`private`, `shareable` or `host`).
        public var ipcMode: String
        /// Host paths mounted into it (bind mounts only; volumes are not host paths).
        public var hostMounts: [String]
        /// Host device nodes given to it.
        public var hostDevices: [String]
        /// Capabilities added beyond the engine's default set.
        public var addedCapabilities: [String]
        /// The GPU device requests it was created with (Docker's `DeviceRequests` ids).
        public var gpuDeviceRequests: [String]

        /// What it has that host admission forbids; empty for a container this client made.
        public var violations: [AdmissionViolation] {
            var found: [AdmissionViolation] = []
            if privileged { found.append(.privileged) }
            if networkMode == "host" { found.append(.hostNetwork) }
            if pidMode == "host" { found.append(.hostPID) }
            if ipcMode == "host" { found.append(.hostIPC) }
            found += hostMounts.map { .hostMount($0) }
            found += hostDevices.map { .hostDevice($0) }
            found += addedCapabilities.map { .addedCapability($0) }
            return found
        }
    }

    /// What `inspect` tells about one container.
    public struct ContainerDetails: Sendable, Hashable {
        /// The full id.
        public var id: String
        /// The name, without Docker's leading `/`.
        public var name: String
        /// The image reference it was created from.
        public var image: String
        /// Its labels.
        public var labels: [String: String]
        /// Its environment, the image's included.
        public var environment: [String: String]
        /// What it runs now.
        public var state: ContainerState
        /// Its confinement.
        public var security: SecurityProfile
        /// The memory limit in bytes; nil for none.
        public var memoryLimitBytes: Int64?
        /// Published ports.
        public var ports: [PortMapping]
        /// When it was created.
        public var createdAt: Date?
        /// Its address on each network it joined, by network name (bridge networks only).
        public var networkAddresses: [String: String] = [:]
        /// The host file the engine bind-mounts as the container's `/etc/hosts`.
        public var hostsPath: String? = nil
    }

    /// One row of `list`.
    public struct ContainerSummary: Sendable, Hashable {
        /// The full id.
        public var id: String
        /// The name, without Docker's leading `/`.
        public var name: String
        /// The image reference.
        public var image: String
        /// Its labels.
        public var labels: [String: String]
        /// Its status.
        public var status: ContainerState.Status
        /// When it was created.
        public var createdAt: Date?
    }

    /// One line a container wrote.
    public struct LogLine: Sendable, Hashable {
        /// Which stream it wrote to.
        public enum Stream: String, Sendable, Hashable {
            /// Standard output.
            case stdout
            /// Standard error.
            case stderr
        }
        /// The stream.
        public var stream: Stream
        /// The line, without its newline.
        public var text: String
        /// Makes a line.
        public init(stream: Stream, text: String) {
            self.stream = stream
            self.text = text
        }
    }

    /// Something that happened to a container, from the engine's event stream.
    public struct ContainerEvent: Sendable, Hashable {
        /// The action: `create`, `start`, `die`, `oom`, `kill`, `stop`, `remove`, ….
        public var action: String
        /// The container id.
        public var id: String
        /// The container name, when the engine told it.
        public var name: String?
        /// The exit code, for `die`.
        public var exitCode: Int?
        /// The container's labels (and the other attributes the engine attached).
        public var attributes: [String: String]
        /// When it happened.
        public var time: Date?
    }
}

// MARK: - Wire formats (Docker's compat API, which both engines serve)

struct WireVersion: Decodable {
    struct Component: Decodable {
        var Name: String?
        var Version: String?
    }
    var Version: String?
    var ApiVersion: String?
    var Components: [Component]?
}

struct WireCreated: Decodable {
    var Id: String
}

/// One row of libpod's remove answer.
struct WireRemoveReport: Decodable {
    var Id: String?
    var Err: String?
}

struct WireMessage: Decodable {
    var message: String?
}

/// A list of strings that some engines send as one string, or null.
struct LenientStrings: Decodable, Hashable {
    var values: [String]
    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            values = []
        } else if let list = try? c.decode([String].self) {
            values = list
        } else {
            let one = try c.decode(String.self)
            values = one.isEmpty ? [] : [one]
        }
    }
}

struct WireInspect: Decodable {
    struct State: Decodable {
        var Status: String?
        var Running: Bool?
        var ExitCode: Int?
        var OOMKilled: Bool?
        var StartedAt: String?
        var FinishedAt: String?
        var Error: String?
    }
    struct Config: Decodable {
        var Image: String?
        var Env: LenientStrings?
        var Labels: [String: String]?
    }
    struct PortBinding: Decodable {
        var HostIp: String?
        var HostPort: String?
    }
    struct Device: Decodable {
        var PathOnHost: String?
    }
    struct DeviceRequest: Decodable {
        var Driver: String?
        var DeviceIDs: [String]?
    }
    struct HostConfig: Decodable {
        var Privileged: Bool?
        var NetworkMode: String?
        var PidMode: String?
        var IpcMode: String?
        var Binds: [String]?
        var Devices: [Device]?
        var DeviceRequests: [DeviceRequest]?
        var CapAdd: LenientStrings?
        var Memory: Int64?
        var PortBindings: [String: [PortBinding]?]?
    }
    struct Mount: Decodable {
        var `Type`: String?
        var Source: String?
    }
    var Id: String
    var Name: String?
    var Created: String?
    var Image: String?
    var State: State?
    var Config: Config?
    var HostConfig: HostConfig?
    var Mounts: [Mount]?
    struct NetworkSettings: Decodable {
        struct Endpoint: Decodable {
            var IPAddress: String?
        }
        var Networks: [String: Endpoint]?
    }
    var NetworkSettings: NetworkSettings?
    var HostsPath: String?
}

struct WireSummary: Decodable {
    var Id: String
    var Names: [String]?
    var Image: String?
    var Labels: [String: String]?
    var State: String?
    var Created: Int64?
}

struct WireEvent: Decodable {
    struct Actor: Decodable {
        var ID: String?
        var Attributes: [String: String]?
    }
    var `Type`: String?
    var Action: String?
    var status: String?
    var id: String?
    var Actor: Actor?
    var time: Int64?
    var timeNano: Int64?
}

extension ContainerEngine.ContainerDetails {
    init(_ w: WireInspect) {
        let host = w.HostConfig
        var environment: [String: String] = [:]
        for entry in w.Config?.Env?.values ?? [] {
            let parts = entry.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            environment[String(parts[0])] = parts.count > 1 ? String(parts[1]) : ""
        }
        var mounts = (host?.Binds ?? []).map { String($0.split(separator: ":").first ?? Substring($0)) }
        for m in w.Mounts ?? [] where m.Type == "bind" {
            if let source = m.Source, !mounts.contains(source) { mounts.append(source) }
        }
        var ports: [ContainerEngine.PortMapping] = []
        for (key, bindings) in host?.PortBindings ?? [:] {
            let parts = key.split(separator: "/")
            guard let containerPort = parts.first.flatMap({ Int($0) }) else { continue }
            let proto = ContainerEngine.PortMapping.PortProtocol(rawValue: parts.count > 1 ? String(parts[1]) : "tcp") ?? .tcp
            for b in bindings ?? [] {
                guard let hostPort = b.HostPort.flatMap({ Int($0) }) else { continue }
                ports.append(
                    ContainerEngine.PortMapping(
                        containerPort: containerPort, hostPort: hostPort, hostIP: b.HostIp ?? "", protocol: proto))
            }
        }
        let state = w.State
        let status = state?.Status.map(ContainerEngine.ContainerState.Status.init(engineWord:)) ?? .unknown
        self.init(
            id: w.Id,
            name: Self.trimName(w.Name ?? ""),
            image: w.Config?.Image ?? w.Image ?? "",
            labels: w.Config?.Labels ?? [:],
            environment: environment,
            state: ContainerEngine.ContainerState(
                status: status,
                exitCode: state?.ExitCode ?? 0,
                oomKilled: state?.OOMKilled ?? false,
                startedAt: state?.StartedAt.flatMap(RFC3339.parse),
                finishedAt: status == .running ? nil : state?.FinishedAt.flatMap(RFC3339.parse),
                error: state?.Error.flatMap { $0.isEmpty ? nil : $0 }),
            security: ContainerEngine.SecurityProfile(
                privileged: host?.Privileged ?? false,
                networkMode: host?.NetworkMode ?? "",
                pidMode: host?.PidMode ?? "",
                ipcMode: host?.IpcMode ?? "",
                hostMounts: mounts,
                hostDevices: (host?.Devices ?? []).compactMap(\.PathOnHost),
                addedCapabilities: host?.CapAdd?.values ?? [],
                gpuDeviceRequests: (host?.DeviceRequests ?? []).flatMap { $0.DeviceIDs ?? [] }),
            memoryLimitBytes: host?.Memory.flatMap { $0 > 0 ? $0 : nil },
            ports: ports.sorted { ($0.containerPort, $0.hostPort) < ($1.containerPort, $1.hostPort) },
            createdAt: w.Created.flatMap(RFC3339.parse))
        for (network, endpoint) in w.NetworkSettings?.Networks ?? [:] {
            if let address = endpoint.IPAddress, !address.isEmpty { networkAddresses[network] = address }
        }
        hostsPath = w.HostsPath.flatMap { $0.isEmpty ? nil : $0 }
    }

    static func trimName(_ name: String) -> String {
        name.hasPrefix("/") ? String(name.dropFirst()) : name
    }
}

/// RFC 3339 timestamps as engines write them, with up to nanosecond fractions.
enum RFC3339 {
    /// The date, or nil for an unparsable text or Go's zero time (`0001-01-01T00:00:00Z`).
    static func parse(_ text: String) -> Date? {
        let s = Array(text.utf8)
        guard s.count >= 20 else { return nil }
        func number(_ from: Int, _ count: Int) -> Int? {
            var n = 0
            for i in from..<(from + count) {
                let c = s[i]
                guard c >= 48, c <= 57 else { return nil }
                n = n * 10 + Int(c - 48)
            }
            return n
        }
        guard let year = number(0, 4), let month = number(5, 2), let day = number(8, 2),
            let hour = number(11, 2), let minute = number(14, 2), let second = number(17, 2)
        else { return nil }
        guard year > 1 else { return nil }
        var i = 19
        var fraction = 0.0
        if i < s.count, s[i] == UInt8(ascii: ".") {
            i += 1
            var scale = 0.1
            while i < s.count, s[i] >= 48, s[i] <= 57 {
                fraction += Double(s[i] - 48) * scale
                scale /= 10
                i += 1
            }
        }
        var offset = 0
        if i < s.count, s[i] == UInt8(ascii: "+") || s[i] == UInt8(ascii: "-") {
            guard i + 6 <= s.count, let h = number(i + 1, 2), let m = number(i + 4, 2) else { return nil }
            offset = (h * 3600 + m * 60) * (s[i] == UInt8(ascii: "-") ? -1 : 1)
        } else if !(i < s.count && (s[i] == UInt8(ascii: "Z") || s[i] == UInt8(ascii: "z"))) {
            return nil
        }
        var calendar = Calendar(identifier: .gregorian)
        guard let utc = TimeZone(identifier: "UTC") else { return nil }
        calendar.timeZone = utc
        let components = DateComponents(year: year, month: month, day: day, hour: hour, minute: minute, second: second)
        guard let base = calendar.date(from: components) else { return nil }
        return base.addingTimeInterval(fraction - Double(offset))
    }
}
