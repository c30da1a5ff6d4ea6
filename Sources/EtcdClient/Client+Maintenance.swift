#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

extension Etcd {
    /// A member's status.
    public struct Status: Sendable, Hashable, Decodable {
        /// The header (its `memberID` is the answering member).
        public var header: ResponseHeader
        /// The etcd version, e.g. `3.4.23`.
        public var version: String
        /// The backend database size in bytes.
        public var dbSize: Int64
        /// The member id of the leader, as this member sees it (0: none).
        public var leader: UInt64
        /// The raft index.
        public var raftIndex: UInt64
        /// The raft term.
        public var raftTerm: UInt64
        /// Bytes of the backend in use.
        public var dbSizeInUse: Int64

        enum CodingKeys: String, CodingKey { case header, version, dbSize, leader, raftIndex, raftTerm, dbSizeInUse }
        /// Decodes the gateway's JSON.
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            header = try c.decodeIfPresent(ResponseHeader.self, forKey: .header) ?? ResponseHeader()
            version = try c.decodeIfPresent(String.self, forKey: .version) ?? ""
            dbSize = try c.wireInt64(.dbSize)
            leader = try c.wireUInt64(.leader)
            raftIndex = try c.wireUInt64(.raftIndex)
            raftTerm = try c.wireUInt64(.raftTerm)
            dbSizeInUse = try c.wireInt64(.dbSizeInUse)
        }
    }

    /// A member of the cluster.
    public struct Member: Sendable, Hashable, Decodable {
        /// The member id.
        public var id: UInt64
        /// Its name (empty until it started).
        public var name: String
        /// Its peer URLs.
        public var peerURLs: [String]
        /// Its client URLs.
        public var clientURLs: [String]
        /// Whether it is a non-voting learner.
        public var isLearner: Bool

        enum CodingKeys: String, CodingKey { case id = "ID", name, peerURLs, clientURLs, isLearner }
        /// Decodes the gateway's JSON.
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            id = try c.wireUInt64(.id)
            name = try c.decodeIfPresent(String.self, forKey: .name) ?? ""
            peerURLs = try c.decodeIfPresent([String].self, forKey: .peerURLs) ?? []
            clientURLs = try c.decodeIfPresent([String].self, forKey: .clientURLs) ?? []
            isLearner = try c.decodeIfPresent(Bool.self, forKey: .isLearner) ?? false
        }
    }
}

private struct Empty: Encodable {}

private struct MemberListAnswer: Decodable {
    var members: [Etcd.Member]?
}

extension Etcd.Client {
    /// The status of the member requests go to now, or of `endpoint` (no failover then).
    /// Maps to `POST /v3/maintenance/status`.
    public func status(endpoint: String? = nil) async throws -> Etcd.Status {
        guard let endpoint else { return try await call("/v3/maintenance/status", Empty(), retry: .idempotent) }
        let request = makeRequest(endpoint: endpoint, path: "/v3/maintenance/status", body: Data("{}".utf8), stream: false)
        switch await perform(request) {
        case .cancelled: throw EtcdError.cancelled
        case .failed(let message, _, let timedOut):
            throw timedOut ? EtcdError.timeout(message, endpoint: endpoint) : EtcdError.unavailable(message, endpoint: endpoint)
        case .completed(let response):
            guard response.status == 200 else { throw Self.gatewayError(response) }
            return try decode(Etcd.Status.self, from: response.body)
        }
    }

    /// The cluster's members. Maps to `POST /v3/cluster/member/list`.
    public func memberList() async throws -> [Etcd.Member] {
        let answer: MemberListAnswer = try await call("/v3/cluster/member/list", Empty(), retry: .idempotent)
        return answer.members ?? []
    }
}
