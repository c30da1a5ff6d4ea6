#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import StreamingJSON

/// The kinds of object gpuplane stores. The raw value is the path segment in
/// etcd (`/gpuplane/<kind>/<tenant>/<name>`) and in the REST API.
public enum ResourceKind: String, Codable, Sendable, CaseIterable {
    case application = "applications"
    case deployment = "deployments"
    case replica = "replicas"
    case modelServer = "modelservers"
    case node = "nodes"
    case catalogModel = "catalogmodels"
    case machineType = "machinetypes"
    case tenant = "tenants"
    case usageRecord = "usagerecords"
    case event = "events"
    /// A tenant's secret (``Secret``): values encrypted at rest, never served.
    case secret = "secrets"

    /// Cluster-scoped kinds live under the `_cluster` tenant.
    public var isClusterScoped: Bool {
        switch self {
        case .node, .catalogModel, .machineType, .tenant: return true
        default: return false
        }
    }
}

/// Metadata every stored object carries.
public struct ObjectMeta: Codable, Sendable, Hashable {
    /// The tenant used for cluster-scoped kinds.
    public static let clusterTenant = "_cluster"

    /// The object's name, unique per kind and tenant.
    public var name: String
    /// The owning tenant (`_cluster` for cluster-scoped kinds).
    public var tenant: String
    /// A random identifier fixed at creation; distinguishes re-created objects of one name.
    public var uid: String
    /// The etcd `mod_revision` of the stored value, as a decimal string; empty before the first write.
    public var resourceVersion: String
    /// Free-form labels, used for selection (e.g. `gpu-mode=dedicated` on nodes).
    public var labels: [String: String]
    /// When the object was first created.
    public var created: Date?

    /// Makes metadata for a new object; `uid` and `created` are set by the store on create.
    public init(
        name: String, tenant: String = ObjectMeta.clusterTenant, uid: String = "",
        resourceVersion: String = "", labels: [String: String] = [:], created: Date? = nil
    ) {
        self.name = name
        self.tenant = tenant
        self.uid = uid
        self.resourceVersion = resourceVersion
        self.labels = labels
        self.created = created
    }

    /// A new random (version 4) UUID in lower case, for `uid`.
    ///
    /// Drawn from the system's generator (`getrandom`): Foundation's `UUID()` opens and reads
    /// `/dev/urandom` each time here, which was about 3% of an apply's CPU.
    public static func newUID() -> String {
        var generator = SystemRandomNumberGenerator()
        var bytes = (generator.next() as UInt64, generator.next() as UInt64)
        return withUnsafeMutableBytes(of: &bytes) { raw -> String in
            raw[6] = (raw[6] & 0x0F) | 0x40  // version 4
            raw[8] = (raw[8] & 0x3F) | 0x80  // RFC 4122 variant
            let hex = Array("0123456789abcdef".utf8)
            return String(unsafeUninitializedCapacity: 36) { out in
                var i = 0
                for (index, byte) in raw.enumerated() {
                    if index == 4 || index == 6 || index == 8 || index == 10 {
                        out[i] = UInt8(ascii: "-")
                        i += 1
                    }
                    out[i] = hex[Int(byte >> 4)]
                    out[i + 1] = hex[Int(byte & 0x0F)]
                    i += 2
                }
                return i
            }
        }
    }

    /// The resource version as an etcd revision (0 when never stored).
    public var revision: Int64 { Int64(resourceVersion) ?? 0 }
}

/// A typed object that the store can keep in etcd.
public protocol Resource: Codable, Sendable {
    /// The kind, which fixes the etcd key prefix.
    static var kind: ResourceKind { get }
    /// Name, tenant, version and labels.
    var metadata: ObjectMeta { get set }
}

extension Resource {
    /// The etcd key of this object: `/gpuplane/<kind>/<tenant>/<name>`.
    public var storageKey: String { Self.storageKey(tenant: metadata.tenant, name: metadata.name) }

    /// The etcd key of an object of this kind.
    public static func storageKey(tenant: String, name: String) -> String {
        "\(storagePrefix(tenant: tenant))\(name)"
    }

    /// The key prefix of every object of this kind of one tenant, or of all tenants when `tenant` is nil.
    public static func storagePrefix(tenant: String?) -> String {
        if let tenant { return KeySpace.resources(kind, tenant: tenant) }
        return KeySpace.resources(kind)
    }
}

/// The JSON coders gpuplane uses everywhere, so stored and served bytes are stable:
/// sorted keys, ISO-8601 dates.
public enum GPUPlaneJSON {
    /// The JSON of `value`: sorted keys, unescaped slashes, ISO-8601 dates, written as the
    /// value is walked (`StreamingJSONEncoder`), byte-for-byte what `encoder()` produces.
    public static func encode<T: Encodable>(_ value: T) throws -> Data {
        try StreamingJSONEncoder.encode(value)
    }

    /// A `JSONEncoder` with sorted keys and ISO-8601 dates (the format `encode(_:)` writes faster).
    public static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }

    /// Decodes what gpuplane wrote (stored objects, its own API's answers) with
    /// `StreamingJSONDecoder`: the results `decoder()` gives, faster, but with errors that carry
    /// no coding path. User input goes through `decoder()`, whose errors name the field. Objects
    /// kept long (an informer's or watch cache's) pass `strings`, to share their equal strings
    /// with the others decoded through it.
    public static func decode<T: Decodable>(_ type: T.Type, from data: Data, strings: StringTable? = nil) throws -> T {
        try StreamingJSONDecoder.decode(type, from: data, strings: strings)
    }

    /// A decoder matching `encoder()`.
    public static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }
}
