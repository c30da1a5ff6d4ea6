#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

extension ContainerEngine {
    /// What a container may be: the whole of what the node-agent can ask an engine for.
    ///
    /// Host admission lives in this type's shape: it has no way to say "privileged", "host
    /// network/PID/IPC", "mount this host path", "add this capability" or "this device" other
    /// than GPUs by index, so no caller can ask for them. ``validate()`` refuses what the shape
    /// alone cannot (names, reserved variables, bad ports); every create calls it.
    public struct ContainerSpec: Sendable, Hashable {
        /// The container's network.
        public enum Network: String, Sendable, Hashable {
            /// The engine's default bridge, with ``ContainerSpec/ports`` published.
            case bridge
            /// A loopback-only network namespace; no port may be published.
            case none
        }

        /// The container name: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 128 characters.
        public var name: String
        /// The image reference, already in the engine's store (nothing is pulled).
        public var image: String
        /// Replaces the image's `CMD`; nil keeps it.
        public var command: [String]?
        /// Replaces the image's `ENTRYPOINT`; nil keeps it.
        public var entrypoint: [String]?
        /// Environment variables, added to the image's. Names beginning with `NVIDIA_` are
        /// reserved: GPU visibility is set by the client from ``gpuIndices`` alone.
        public var environment: [String: String]
        /// Labels. ``ContainerEngine/managedLabel`` is always added.
        public var labels: [String: String]
        /// Ports published on the host (``Network/bridge`` only).
        public var ports: [PortMapping]
        /// The memory limit in bytes (swap included: no swap); nil for none.
        public var memoryLimitBytes: Int64?
        /// The host GPUs the container gets, by index; it gets no other device.
        public var gpuIndices: [Int]
        /// The network.
        public var network: Network
        /// With ``Network/bridge``: the engine network to join instead of the engine's default
        /// bridge (the node's pod network, ``PodNetwork``); nil for the default.
        public var networkName: String? = nil
        /// The CPU limit in thousandths of a core (a CFS quota over a 100 ms period); nil for
        /// none. The node-agent sets it from the replica's machine type, capped at the host's CPUs
        /// (engines refuse more CPUs than the host has).
        public var cpuLimitMilli: Int? = nil
        /// The size of the container's `/dev/shm` (its own IPC namespace's tmpfs), bytes; nil for
        /// the engine's default (64 MiB). vLLM's tensor parallelism needs more
        /// (``ServingCommand/shmMiB(engine:gpus:)``).
        public var shmSizeBytes: Int64? = nil
        /// A model's weights on the host, mounted read-only at ``ServingWeights/mountPath``
        /// (`/weights`): a directory of the node-agent's weights cache, or a host path an
        /// operator's catalog names. The only host path a container can get; set by the
        /// reconciler for model servers and deployment instances, never from a manifest. Nil: none.
        public var weightsMount: String? = nil

        /// Makes a spec.
        public init(
            name: String, image: String, command: [String]? = nil, entrypoint: [String]? = nil,
            environment: [String: String] = [:], labels: [String: String] = [:], ports: [PortMapping] = [],
            memoryLimitBytes: Int64? = nil, gpuIndices: [Int] = [], network: Network = .bridge
        ) {
            self.name = name
            self.image = image
            self.command = command
            self.entrypoint = entrypoint
            self.environment = environment
            self.labels = labels
            self.ports = ports
            self.memoryLimitBytes = memoryLimitBytes
            self.gpuIndices = gpuIndices
            self.network = network
        }

        /// The smallest CPU limit engines accept, 0.01 CPU.
        public static let minimumCPUMilli = 10
        /// The CFS period CPU limits are expressed over, microseconds (engines' default, 100 ms).
        public static let cpuPeriodMicroseconds = 100_000

        /// The smallest memory limit engines accept (Docker's), 6 MiB.
        public static let minimumMemoryBytes: Int64 = 6 * 1024 * 1024

        /// Checks what the shape cannot.
        /// - Throws: ``EngineError/Code/invalidSpec`` with ``EngineError/field`` naming the field.
        public func validate() throws(EngineError) {
            guard Self.isValidName(name) else {
                throw .invalidSpec("name", "\"\(name)\" is not [a-zA-Z0-9][a-zA-Z0-9_.-]* of at most 128 characters")
            }
            guard !image.isEmpty, image.count <= 512,
                !image.unicodeScalars.contains(where: { $0.properties.isWhitespace || $0.value < 0x20 })
            else { throw .invalidSpec("image", "\"\(image)\" is not an image reference") }
            for (key, argv) in [("command", command), ("entrypoint", entrypoint)] {
                if let argv, argv.contains(where: { $0.contains("\0") }) {
                    throw .invalidSpec(key, "arguments may not contain NUL")
                }
            }
            for (key, value) in environment {
                guard !key.isEmpty, !key.contains("="), !key.contains("\0"), !value.contains("\0") else {
                    throw .invalidSpec("environment.\(key)", "a variable name must be non-empty, without '=' or NUL")
                }
                if key.uppercased().hasPrefix("NVIDIA_") {
                    throw .invalidSpec(
                        "environment.\(key)", "NVIDIA_* variables are reserved: GPU visibility comes from gpuIndices")
                }
            }
            for (key, value) in labels where key.isEmpty || key.contains("\0") || value.contains("\0") {
                throw .invalidSpec("labels.\(key)", "a label key must be non-empty, without NUL")
            }
            if let networkName, !Self.isValidName(networkName) || networkName == "host" || networkName == "none" {
                throw .invalidSpec("networkName", "\"\(networkName)\" is not the name of a bridge network")
            }
            if !ports.isEmpty, network == .none {
                throw .invalidSpec("ports", "a container without network publishes no port")
            }
            var seen = Set<String>()
            for (i, port) in ports.enumerated() {
                guard (1...65535).contains(port.containerPort), (1...65535).contains(port.hostPort) else {
                    throw .invalidSpec("ports[\(i)]", "ports are 1...65535")
                }
                guard Self.isIPAddress(port.hostIP) else {
                    throw .invalidSpec("ports[\(i)].hostIP", "\"\(port.hostIP)\" is not an IP address")
                }
                guard seen.insert("\(port.hostIP)|\(port.hostPort)|\(port.protocol.rawValue)").inserted else {
                    throw .invalidSpec("ports[\(i)]", "host port \(port.hostPort)/\(port.protocol.rawValue) is published twice")
                }
            }
            if let cpuLimitMilli, cpuLimitMilli < Self.minimumCPUMilli {
                throw .invalidSpec("cpuLimitMilli", "at least \(Self.minimumCPUMilli) (0.01 CPU)")
            }
            if let memoryLimitBytes, memoryLimitBytes < Self.minimumMemoryBytes {
                throw .invalidSpec("memoryLimitBytes", "at least \(Self.minimumMemoryBytes) bytes")
            }
            if let weightsMount {
                let parts = weightsMount.split(separator: "/", omittingEmptySubsequences: false)
                guard weightsMount.hasPrefix("/"), !weightsMount.contains("\0"), !weightsMount.contains(","),
                    !parts.contains(where: { $0 == ".." || $0 == "." }), weightsMount.count > 1
                else {
                    throw .invalidSpec("weightsMount", "\"\(weightsMount)\" is not a plain absolute path")
                }
            }
            guard gpuIndices.allSatisfy({ (0..<1024).contains($0) }), Set(gpuIndices).count == gpuIndices.count else {
                throw .invalidSpec("gpuIndices", "GPU indices are distinct and in 0..<1024")
            }
        }

        static func isValidName(_ name: String) -> Bool {
            guard let first = name.unicodeScalars.first, name.unicodeScalars.count <= 128,
                first.isASCIIAlphanumeric
            else { return false }
            return name.unicodeScalars.allSatisfy { $0.isASCIIAlphanumeric || "_.-".unicodeScalars.contains($0) }
        }

        static func isIPAddress(_ text: String) -> Bool {
            var v4 = in_addr()
            var v6 = in6_addr()
            return inet_pton(AF_INET, text, &v4) == 1 || inet_pton(AF_INET6, text, &v6) == 1
        }
    }

    /// One port published on the host.
    public struct PortMapping: Sendable, Hashable {
        /// A transport protocol.
        public enum PortProtocol: String, Sendable, Hashable {
            /// TCP.
            case tcp
            /// UDP.
            case udp
        }

        /// The port inside the container.
        public var containerPort: Int
        /// The port on the host.
        public var hostPort: Int
        /// The host address to bind; loopback unless said otherwise.
        public var hostIP: String
        /// The protocol.
        public var `protocol`: PortProtocol

        /// Makes a mapping.
        public init(containerPort: Int, hostPort: Int, hostIP: String = "127.0.0.1", protocol: PortProtocol = .tcp) {
            self.containerPort = containerPort
            self.hostPort = hostPort
            self.hostIP = hostIP
            self.protocol = `protocol`
        }
    }
}

extension Unicode.Scalar {
    fileprivate var isASCIIAlphanumeric: Bool {
        ("a"..."z").contains(self) || ("A"..."Z").contains(self) || ("0"..."9").contains(self)
    }
}
