import EtcdClient
import Logging

extension ResourceStore {
    /// A store over a new etcd client for `endpoints` (`http://` or `https://` client URLs;
    /// requests move to the next member when one fails), the way the daemons make theirs.
    ///
    /// - Parameters:
    ///   - tls: the CA, client certificate and key for `https://` endpoints (`CurlHTTP.TLS`).
    ///   - requestTimeout: the deadline of one request to one member.
    ///   - batchWrites: see ``init(client:pageSize:batchWrites:)``.
    /// - Throws: ``StoreError/Code/invalid`` when there is no endpoint or one is not an
    ///   http(s) URL.
    public static func connect(
        endpoints: [String], tls: Etcd.Configuration.TLS? = nil, requestTimeout: Duration = .seconds(5),
        batchWrites: Bool = true, logger: Logger = Logger(label: "gpuplane.etcd")
    ) throws -> ResourceStore {
        let client: Etcd.Client
        do {
            client = try Etcd.Client(
                Etcd.Configuration(endpoints: endpoints, requestTimeout: requestTimeout, tls: tls, logger: logger))
        } catch let error as EtcdError {
            throw StoreError(code: .invalid, message: "etcd endpoints: \(error.message)")
        }
        return ResourceStore(client: client, batchWrites: batchWrites)
    }

    /// Whether etcd answers: returns when a member does.
    /// - Throws: ``StoreError/Code/unavailable``.
    public func ping() async throws {
        do { _ = try await client.status() } catch let e as EtcdError { throw StoreError.etcd(e) }
    }
}
