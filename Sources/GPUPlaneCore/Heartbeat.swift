/// Where node liveness lives in etcd: one key per node, attached to a lease the api-server
/// renews on each heartbeat. When the node stops calling, the lease expires, etcd deletes the
/// key, and the scheduler's node-lifecycle controller sees the delete on its watch.
public enum NodeHeartbeat {
    /// The prefix of every heartbeat key: ``KeySpace/heartbeats``.
    public static var prefix: String { KeySpace.heartbeats }

    /// The heartbeat key of `node`: ``KeySpace/heartbeat(node:)``.
    public static func key(_ node: String) -> String { KeySpace.heartbeat(node: node) }

    /// The node a heartbeat key belongs to: ``KeySpace/node(ofHeartbeatKey:)``.
    public static func node(fromKey key: String) -> String? { KeySpace.node(ofHeartbeatKey: key) }

    /// The name of the `Ready` condition.
    public static let readyCondition = "Ready"
}
