/// A scheduler replica's own deadline on its lease, beside etcd's. A leader that has had no
/// renewal handed to it within the TTL, less a margin, stops leading: the lease may be gone in
/// etcd already, and another replica may lead.
///
/// A standby has none. Its key waits in the election for as long as etcd keeps its lease: the
/// keeper (``Etcd/Client/keepAlive(_:ttl:)``, on a thread of its own) ends the term when etcd
/// says the lease is gone or when no renewal succeeded within the TTL. Giving the key up on a
/// renewal merely handed over late (a loaded machine's cooperative pool) sends a standby to the
/// back of the election with a new lease and a new key; in a starved fleet run both schedulers
/// did that over and over, and neither led for two minutes. A standby that wins while its
/// renewals are late meets the deadline at once, as a leader.
struct LeaseDeadline: Sendable {
    /// The lease's time to live.
    let ttl: Duration

    /// How long before the TTL a leader stops: a quarter of it, at most half a second.
    var margin: Duration { min(ttl / 4, .milliseconds(500)) }

    /// Why the term must end now, or nil: only a replica `leading` (its campaign won) whose
    /// last renewal is `sinceRenewal` old, past the TTL less ``margin``.
    func passed(leading: Bool, sinceRenewal: Duration) -> String? {
        guard leading, sinceRenewal >= ttl - margin else { return nil }
        return "no renewal for \(sinceRenewal)"
    }
}
