/// Every etcd key gpuplane reads or writes, in one place. Nothing else spells a key: code
/// that needs one asks here (or, for the families that are not resources, goes through their
/// typed interface in GPUPlaneStore, named with each family below).
///
/// | family | key | owner in GPUPlaneStore |
/// | --- | --- | --- |
/// | resources | `/gpuplane/<kind>/<tenant>/<name>` | `ResourceStore` |
/// | tenants' secrets (a resource, values sealed) | `/gpuplane/secrets/<tenant>/<name>` | `ResourceStore` |
/// | bearer tokens | `/gpuplane/tokens/<sha256>` | `TokenIndex` |
/// | node heartbeats | `/gpuplane/heartbeats/<node>` (under its api-server's lease) | `NodeHeartbeats` |
/// | deployment load | `/gpuplane/load/deployments/<tenant>/<deployment>/<reporter>` (under a lease) | `LoadReports` |
/// | inference secret | `/gpuplane/system/inference-secret` | `InferenceSecret` |
/// | meter cursor | `/gpuplane/meter/cursor` | `MeterCursor` |
/// | GPU admission markers | `/gpuplane/admission/<tenant>/gpus` | `StoreTransaction.bump` |
/// | scheduler election | `/gpuplane/election/scheduler/<lease>` (under a lease) | the scheduler's election |
///
/// docs/architecture.md ("etcd key map") says who writes and reads each.
public enum KeySpace {
    /// The prefix of every key.
    public static let root = "/gpuplane/"

    // MARK: - Resources

    /// `/gpuplane/<kind>/`: every object of `kind`, of every tenant.
    public static func resources(_ kind: ResourceKind) -> String { root + kind.rawValue + "/" }

    /// `/gpuplane/<kind>/<tenant>/`: every object of `kind` of one tenant (`_cluster` for
    /// cluster-scoped kinds).
    public static func resources(_ kind: ResourceKind, tenant: String) -> String { resources(kind) + tenant + "/" }

    /// `/gpuplane/<kind>/<tenant>/<name>`: one object.
    public static func object(_ kind: ResourceKind, tenant: String, name: String) -> String {
        resources(kind, tenant: tenant) + name
    }

    /// The kind, tenant and name of an object's key; nil for a key of another family.
    public static func object(ofKey key: String) -> (kind: ResourceKind, tenant: String, name: String)? {
        guard key.hasPrefix(root) else { return nil }
        let parts = key.dropFirst(root.count).split(separator: "/", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, let kind = ResourceKind(rawValue: String(parts[0])), !parts[1].isEmpty, !parts[2].isEmpty
        else { return nil }
        return (kind, String(parts[1]), String(parts[2]))
    }

    // MARK: - Keys that are not resources

    /// `/gpuplane/tokens/`: the token index, `<sha256 of the secret>` → `TokenRecord` (JSON).
    /// Written by the api-server when an admin issues a token, deleted when one is revoked;
    /// each api-server holds a copy, listed and then watched.
    public static let tokens = root + "tokens/"

    /// The index key of the token whose secret hashes to `sha256` (hex).
    public static func token(sha256: String) -> String { tokens + sha256 }

    /// The hash a token index key stands for; nil for a key of another family.
    public static func sha256(ofTokenKey key: String) -> String? {
        key.hasPrefix(tokens) ? String(key.dropFirst(tokens.count)) : nil
    }

    /// `/gpuplane/heartbeats/`: one key per node whose agent beats, `{"server", "state"}`
    /// written by the api-server it beats to (`live`, then `silent` when it stops calling) under
    /// that api-server's lease; the scheduler's watch sees it.
    public static let heartbeats = root + "heartbeats/"

    /// The heartbeat key of `node`.
    public static func heartbeat(node: String) -> String { heartbeats + node }

    /// The node a heartbeat key belongs to; nil for a key of another family.
    public static func node(ofHeartbeatKey key: String) -> String? {
        key.hasPrefix(heartbeats) ? String(key.dropFirst(heartbeats.count)) : nil
    }

    /// `/gpuplane/load/deployments/`: each api-server's report of each deployment's load
    /// (`DeploymentLoad`, JSON), under the reporter's rotating lease; summed by the
    /// scheduler's autoscaler.
    public static let deploymentLoads = root + "load/deployments/"

    /// The key of `reporter`'s report on `tenant`'s `deployment`.
    public static func deploymentLoad(tenant: String, deployment: String, reporter: String) -> String {
        "\(deploymentLoads)\(tenant)/\(deployment)/\(reporter)"
    }

    /// The tenant and deployment a load report's key is about; nil for a key of another shape.
    public static func deployment(ofLoadKey key: String) -> (tenant: String, name: String)? {
        guard key.hasPrefix(deploymentLoads) else { return nil }
        let parts = key.dropFirst(deploymentLoads.count).split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty, !parts[1].isEmpty else { return nil }
        return (String(parts[0]), String(parts[1]))
    }

    /// `/gpuplane/system/inference-secret`: the HMAC key of inference URLs (32 random bytes),
    /// created once by the first api-server that needs it and read by every other.
    public static let inferenceSecret = root + "system/inference-secret"

    /// `/gpuplane/meter/cursor`: the start (epoch seconds, decimal text) of the last interval
    /// the scheduler's usage meter fully metered, compare-and-swapped forward by the leader.
    public static let meterCursor = root + "meter/cursor"

    /// `/gpuplane/admission/<tenant>/gpus`: written (empty) by every transaction that adds
    /// whole GPUs to a tenant (an api-server's admission, the autoscaler's scale-up), each on
    /// condition that it did not change since the read its GPU-limit check was made on, so two
    /// such writes that each fit the limit alone cannot both commit.
    public static func gpuAdmission(tenant: String) -> String { root + "admission/\(tenant)/gpus" }

    /// `/gpuplane/election/scheduler`: the scheduler's election; each candidate's key is this
    /// prefix, `/` and its lease, the leader the one created first.
    public static let schedulerElection = root + "election/scheduler"
}
