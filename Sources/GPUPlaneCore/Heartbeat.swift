/// Node liveness: one etcd key per node (``KeySpace/heartbeats``, read and written through
/// `NodeHeartbeats` in GPUPlaneStore), written by the api-server the node beats to (live when
/// it starts beating there, silent when it stops) under that api-server's lease. The
/// scheduler's node-lifecycle step watches the keys.
public enum NodeHeartbeat {
    /// The heartbeat key of `node`: ``KeySpace/heartbeat(node:)`` (kept for the tests and
    /// benchmarks that write heartbeat keys themselves).
    public static func key(_ node: String) -> String { KeySpace.heartbeat(node: node) }

    /// The name of the `Ready` condition.
    public static let readyCondition = "Ready"
}
