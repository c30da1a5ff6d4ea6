#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

extension Etcd {
    /// Proof of leadership in an election: the campaigner's key and its create revision.
    ///
    /// Fence writes with ``fence``: a transaction that includes it fails once this
    /// leadership ended (resigned, lease expired, or key deleted), whoever leads now.
    public struct LeaderKey: Sendable, Hashable, Codable {
        /// The election's name.
        public var name: Data
        /// The leader's key (`<name>/<lease in hex>`).
        public var key: Data
        /// The key's create revision.
        public var revision: Int64
        /// The lease the key is attached to.
        public var lease: Int64

        /// Makes a leader key.
        public init(name: Data, key: Data, revision: Int64, lease: Int64) {
            self.name = name
            self.key = key
            self.revision = revision
            self.lease = lease
        }

        /// The key as text.
        public var keyString: String { String(decoding: key, as: UTF8.self) }

        /// `create_revision(key) == revision`: holds exactly while this leadership lasts.
        public var fence: Compare { Compare(.key(key), .equal, .createRevision(revision)) }

        enum CodingKeys: String, CodingKey { case name, key, revision = "rev", lease }
        /// Decodes the gateway's JSON.
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            name = try c.decodeIfPresent(Data.self, forKey: .name) ?? Data()
            key = try c.decodeIfPresent(Data.self, forKey: .key) ?? Data()
            revision = try c.wireInt64(.revision)
            lease = try c.wireInt64(.lease)
        }
        /// Encodes the gateway's JSON.
        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(name, forKey: .name)
            try c.encode(key, forKey: .key)
            try c.encode(String(revision), forKey: .revision)
            try c.encode(String(lease), forKey: .lease)
        }
    }
}

private struct CampaignAnswer: Decodable {
    var header: Etcd.ResponseHeader?
    var leader: Etcd.LeaderKey?
}

private struct ObserveResult: Decodable {
    var kv: Etcd.KeyValue?
}

extension Etcd.Client {
    /// The key prefix under which an election's campaigners put their keys.
    static func electionPrefix(_ name: String) -> String { name + "/" }

    /// Campaigns in election `name` with `lease` and blocks until this campaigner leads.
    /// Maps to `POST /v3/election/campaign` (no request deadline: it waits for leadership).
    ///
    /// The campaign is keyed by the lease, so it is resumed (never duplicated) when it is
    /// retried on another member. Keep the lease alive meanwhile (``keepAlive(_:ttl:)``);
    /// cancelling the task withdraws the campaign. etcd 3.4 can answer a campaign whose lease
    /// expired while it waited, so the answer is checked: the key must still exist with the
    /// returned create revision, else ``EtcdError/Code/leaseNotFound`` is thrown.
    public func campaign(_ name: String, lease: Int64, value: String) async throws -> Etcd.LeaderKey {
        struct Body: Encodable {
            var name: Data
            var lease: String
            var value: Data
        }
        let answer: CampaignAnswer = try await call(
            "/v3/election/campaign", Body(name: Data(name.utf8), lease: String(lease), value: Data(value.utf8)),
            retry: .idempotent, timeout: .seconds(365 * 24 * 3600))
        guard let leader = answer.leader, leader.revision > 0 else {
            throw EtcdError.decoding("campaign answered without a leader", body: "")
        }
        let current = try await range(.key(leader.key)).kvs.first
        guard let current, current.createRevision == leader.revision else {
            throw EtcdError.leaseNotFound(lease)
        }
        return leader
    }

    /// Changes the leader's value, if `leader` still leads. Implemented as a fenced
    /// `POST /v3/kv/txn` (the same effect as `POST /v3/election/proclaim`, with a typed failure).
    /// - Throws: ``EtcdError/Code/notLeader`` when the leadership ended.
    public func proclaim(_ leader: Etcd.LeaderKey, value: String) async throws {
        let answer = try await txn(
            compare: [leader.fence],
            success: [.put(Etcd.PutRequest(key: leader.key, value: Data(value.utf8), lease: leader.lease))])
        guard answer.succeeded else {
            throw EtcdError(code: .notLeader, message: "\(leader.keyString) no longer leads")
        }
    }

    /// Ends `leader`'s leadership by deleting its key, if it still leads; the next campaigner
    /// takes over. Implemented as a fenced `POST /v3/kv/txn` (the effect of
    /// `POST /v3/election/resign`); repeating it is harmless.
    public func resign(_ leader: Etcd.LeaderKey) async throws {
        _ = try await txn(
            compare: [leader.fence], success: [.deleteRange(Etcd.DeleteRangeRequest(.key(leader.key)))])
    }

    /// The current leader's key-value (its value is what the leader proclaimed), nil when
    /// nobody leads. Implemented as `POST /v3/kv/range` on the election's prefix, oldest
    /// create revision first (what `POST /v3/election/leader` does, without its untyped
    /// "no leader" error).
    public func leader(_ name: String) async throws -> Etcd.KeyValue? {
        try await range(
            .prefix(Self.electionPrefix(name)), limit: 1, sortOrder: .ascend, sortTarget: .create
        ).kvs.first
    }

    /// The successive leaders of election `name` (the current one first). Maps to
    /// `POST /v3/election/observe`, reconnected to another member when the stream drops; a
    /// leader already delivered (same key and mod revision) is not delivered again.
    public func observe(_ name: String) -> AsyncThrowingStream<Etcd.KeyValue, any Error> {
        let (stream, continuation) = AsyncThrowingStream<Etcd.KeyValue, any Error>.makeStream()
        let task = Task { [self] in
            struct Body: Encodable { var name: Data }
            var last: Etcd.KeyValue?
            var failures = 0
            let body: Data
            do { body = try encode(Body(name: Data(name.utf8))) } catch {
                continuation.finish(throwing: error)
                return
            }
            while !Task.isCancelled {
                let index = currentEndpointIndex
                let endpoint = configuration.endpoints[index]
                let lines = openLineStream(endpoint: endpoint, path: "/v3/election/observe", body: body)
                var stopped = false
                let ended = await consume(lines, endpoint: endpoint) { line in
                    guard let decoded = try? decode(StreamLine<ObserveResult>.self, from: line),
                        let kv = decoded.result?.kv
                    else { return true }
                    failures = 0
                    if let last, last.key == kv.key, last.modRevision >= kv.modRevision { return true }
                    last = kv
                    if case .terminated = continuation.yield(kv) {
                        stopped = true
                        return false
                    }
                    return true
                }
                if stopped || Task.isCancelled { break }
                if let ended = ended as? EtcdError, ended.code != .cancelled, !Self.isRetriable(ended),
                    ended.httpStatus != 500
                {
                    continuation.finish(throwing: ended)
                    return
                }
                endpointFailed(index)
                do { try await backoff(min(failures, 5)) } catch { break }
                failures += 1
            }
            continuation.finish()
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }
}
