/// Where node liveness lives in etcd: one key per node, attached to a lease the api-server
/// renews on each heartbeat. When the node stops calling, the lease expires, etcd deletes the
/// key, and the scheduler's node-lifecycle controller sees the delete on its watch.
public enum NodeHeartbeat {
    /// The prefix of every heartbeat key.
    public static let prefix = "/gpuplane/heartbeats/"

    /// The heartbeat key of `node`.
    public static func key(_ node: String) -> String { prefix + node }

    /// The node a heartbeat key belongs to.
    public static func node(fromKey key: String) -> String? {
        key.hasPrefix(prefix) ? String(key.dropFirst(prefix.count)) : nil
    }

    /// The name of the `Ready` condition.
    public static let readyCondition = "Ready"
}
