import EtcdClient
import Logging

extension ResourceStore {
    /// A store over a new etcd client for `endpoints` (`http://` or `https://` client URLs;
    /// requests move to the next member when one fails), the way the daemons make theirs
    /// (from `EtcdConnectionSettings`, which reads the `etcd.*` configuration keys).
    ///
    /// - Parameters:
    ///   - caFile: PEM CA to trust for `https://` members (nil: the system's CAs).
    ///   - certFile: PEM client certificate for etcd's `--client-cert-auth`, with `keyFile`.
    ///   - keyFile: its PEM key.
    ///   - credentials: etcd user and password, when etcd auth is on.
    ///   - requestTimeout: the deadline of one request to one member.
    ///   - batchWrites: see ``init(client:pageSize:batchWrites:)``.
    /// - Throws: ``StoreError/Code/invalid`` when there is no endpoint or one is not an
    ///   http(s) URL.
    public static func connect(
        endpoints: [String], caFile: String? = nil, certFile: String? = nil, keyFile: String? = nil,
        credentials: (user: String, password: String)? = nil, requestTimeout: Duration = .seconds(5),
        batchWrites: Bool = true, logger: Logger = Logger(label: "gpuplane.etcd")
    ) throws -> ResourceStore {
        let tls = caFile == nil && certFile == nil && keyFile == nil
            ? nil : Etcd.Configuration.TLS(caFile: caFile, certFile: certFile, keyFile: keyFile)
        let client: Etcd.Client
        do {
            client = try Etcd.Client(
                Etcd.Configuration(
                    endpoints: endpoints, requestTimeout: requestTimeout, tls: tls, credentials: credentials, logger: logger))
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
