import EtcdClient
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore

/// The gateways' load reports: `/gpuplane/load/deployments/<tenant>/<deployment>/<reporter>`
/// → ``DeploymentLoad`` (``KeySpace/deploymentLoads``). Each api-server writes its own under
/// a ``RotatingLease``, so the reports of one that stops vanish with it; the scheduler's
/// autoscaler reads them all.
///
/// Every method throws ``StoreError`` (``StoreError/Code/unavailable`` when etcd fails).
public struct LoadReports: Sendable {
    /// One report.
    public struct Report: Sendable, Hashable {
        /// The deployment's tenant.
        public var tenant: String
        /// The deployment's name.
        public var deployment: String
        /// What the reporter saw.
        public var load: DeploymentLoad

        /// Makes a report.
        public init(tenant: String, deployment: String, load: DeploymentLoad) {
            self.tenant = tenant
            self.deployment = deployment
            self.load = load
        }
    }

    /// Reports written in one transaction at most (etcd's `--max-txn-ops` is 128 by default).
    public static let writesPerTransaction = 100

    private let client: Etcd.Client

    /// The reports in `store`'s etcd.
    public init(store: ResourceStore) { client = store.client }

    /// Writes `reports` as `reporter`'s, under `lease`'s current lease (renewing each report's
    /// time to live), at most ``writesPerTransaction`` in one transaction.
    public func write(_ reports: [Report], reporter: String, lease: RotatingLease) async throws {
        guard !reports.isEmpty else { return }
        do {
            let leaseID = try await lease.lease(etcd: client)
            for start in stride(from: 0, to: reports.count, by: Self.writesPerTransaction) {
                let chunk = reports[start..<min(start + Self.writesPerTransaction, reports.count)]
                let puts: [Etcd.RequestOp] = try chunk.map { report in
                    let key = KeySpace.deploymentLoad(tenant: report.tenant, deployment: report.deployment, reporter: reporter)
                    return .put(Etcd.PutRequest(key: Data(key.utf8), value: try Self.encode(report.load), lease: leaseID))
                }
                _ = try await client.txn(compare: [], success: puts)
            }
        } catch let e as EtcdError {
            throw StoreError.etcd(e)
        }
    }

    /// Every report of every api-server; keys of another shape and values that do not decode
    /// are skipped.
    public func all() async throws -> [Report] {
        let kvs: [Etcd.KeyValue]
        do { kvs = try await client.range(.prefix(KeySpace.deploymentLoads)).kvs } catch let e as EtcdError {
            throw StoreError.etcd(e)
        }
        return kvs.compactMap { kv in
            guard let (tenant, deployment) = KeySpace.deployment(ofLoadKey: kv.keyString),
                let load = try? GPUPlaneJSON.decode(DeploymentLoad.self, from: kv.value)
            else { return nil }
            return Report(tenant: tenant, deployment: deployment, load: load)
        }
    }

    private static func encode(_ load: DeploymentLoad) throws -> Data {
        do { return try GPUPlaneJSON.encode(load) } catch {
            throw StoreError(code: .invalid, message: "cannot encode a load report: \(error)")
        }
    }
}
