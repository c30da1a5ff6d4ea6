/// Node liveness: one etcd key per node (``KeySpace/heartbeats``, read and written through
/// `NodeHeartbeats` in GPUPlaneStore), attached to a lease the api-server renews on each
/// heartbeat. When the node stops calling, the lease expires, etcd deletes the key, and the
/// scheduler's node-lifecycle step sees the delete on its watch.
public enum NodeHeartbeat {
    /// The heartbeat key of `node`: ``KeySpace/heartbeat(node:)`` (kept for the tests and
    /// benchmarks that write heartbeat keys themselves).
    public static func key(_ node: String) -> String { KeySpace.heartbeat(node: node) }

    /// The name of the `Ready` condition.
    public static let readyCondition = "Ready"
}
