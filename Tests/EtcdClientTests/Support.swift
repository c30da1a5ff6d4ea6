import EtcdClient
import Foundation
import GPUPlaneTestSupport
import Testing

/// One etcd shared by the tests that neither kill it nor compact it; each test works under
/// its own key prefix so tests can run in parallel.
enum SharedEtcd {
    static let fixture = Task { try await EtcdFixture.start() }

    static func client(requestTimeout: Duration = .seconds(10)) async throws -> Etcd.Client {
        let etcd = try await fixture.value
        return try Etcd.Client(Etcd.Configuration(endpoints: etcd.endpoints, requestTimeout: requestTimeout))
    }
}

/// A key prefix no other test uses.
func uniquePrefix(_ name: String) -> String { "/test/\(name)/\(UUID().uuidString.prefix(8))/" }

/// Collects what an asynchronous sequence delivers, for assertions from another task.
final class Collected<Element: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [Element] = []
    private var failure: (any Error)?
    private var ended = false

    func append(_ items: [Element]) { lock.withLock { self.items.append(contentsOf: items) } }
    func finish(_ error: (any Error)?) { lock.withLock { failure = error; ended = true } }
    var values: [Element] { lock.withLock { items } }
    var error: (any Error)? { lock.withLock { failure } }
    var isFinished: Bool { lock.withLock { ended } }
}

/// Starts consuming `watch` into a `Collected` of events.
func collect(_ watch: AsyncThrowingStream<Etcd.WatchResponse, any Error>) -> (Collected<Etcd.WatchEvent>, Task<Void, Never>) {
    let box = Collected<Etcd.WatchEvent>()
    let task = Task {
        do {
            for try await batch in watch { box.append(batch.events) }
            box.finish(nil)
        } catch {
            box.finish(error)
        }
    }
    return (box, task)
}

/// Retries `body` until it succeeds (for writes right after a member restarted).
@discardableResult
func retrying<T>(_ what: String, timeout: Double = 30, _ body: () async throws -> T) async throws -> T {
    let deadline = Date().addingTimeInterval(timeout)
    while true {
        do { return try await body() } catch {
            if Date() > deadline { throw error }
            try await Task.sleep(for: .milliseconds(100))
        }
    }
}

/// Creates `key` unless it exists: a write that is safe to retry after an ambiguous failure.
func createOnce(_ client: Etcd.Client, _ key: String, _ value: String) async throws {
    _ = try await client.txn(compare: [.createRevision(key, .equal, 0)], success: [.put(.init(key, value))])
}
