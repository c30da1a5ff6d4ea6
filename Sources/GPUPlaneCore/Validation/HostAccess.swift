/// Keys that ask for host access: privileged mode, the host's network, PID or IPC namespace,
/// host path mounts, added capabilities, host devices. No manifest can ask for them (every
/// container runs unprivileged in namespaces of its own, with the engine's default capabilities
/// less a few, and no host path; see docs/manifests.md), so each gets a
/// finding of its own, naming the field, instead of a generic "unknown field".
public enum HostAccess {
    /// The key spellings refused, lower-cased with `_` and `-` removed, each with what it asked.
    static let refused: [String: String] = [
        "privileged": "privileged mode",
        "securitycontext": "a security context (privileges, capabilities, users)",
        "allowprivilegeescalation": "privilege escalation",
        "hostnetwork": "the host's network namespace",
        "networkmode": "a network mode (such as the host's network)",
        "network": "a network mode (such as the host's network)",
        "hostpid": "the host's PID namespace",
        "pid": "a PID namespace (such as the host's)",
        "hostipc": "the host's IPC namespace",
        "ipc": "an IPC namespace (such as the host's)",
        "hostpath": "a host path mount",
        "volumes": "volumes (such as host path mounts)",
        "volumemounts": "volume mounts (such as host paths)",
        "mounts": "mounts (such as host paths)",
        "binds": "bind mounts of host paths",
        "capabilities": "added capabilities",
        "capadd": "added capabilities",
        "securityopt": "security options",
        "devices": "host devices",
        "hostusers": "the host's user namespace",
    ]

    /// The finding for `key` in a pod, an application or a deployment at `path`, if it asks for
    /// host access.
    public static func refusal(for key: String, at path: FieldPath) -> Diagnostic? {
        let normalized = String(key.lowercased().filter { $0 != "_" && $0 != "-" })
        guard let what = refused[normalized] else { return nil }
        return Diagnostic(
            .hostAccessForbidden, path: path[key].description,
            "'\(key)' asks for \(what), which gpuplane never grants: every pod runs unprivileged, in network, PID and IPC "
                + "namespaces of its own, with no host path, no added capability and no device but its GPUs; remove '\(key)'")
    }
}
