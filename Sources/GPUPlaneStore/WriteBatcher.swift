import EtcdClient
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Metrics
import Synchronization

/// Group commit for store transactions: while a write is in flight, the ones that arrive queue
/// up and go to etcd together in one request, each keeping its own compares and succeeding or
/// failing on its own.
///
/// Why: etcd's cost per request (gateway JSON, gRPC, a raft proposal, an fsync batch) dwarfs
/// its cost per key, so under concurrent writes N transactions in one request cost a fraction
/// of N requests. An idle store sends a write at once, alone, exactly as before: batching only
/// forms behind writes already in flight, so it adds no latency.
///
/// Flat first: a batch goes to etcd as one flat transaction (every write's compares, then every
/// write's operations), and as a transaction of nested transactions (etcd 3.3+) only when
/// that flat one fails. etcd's gateway decodes JSON by re-scanning each nesting level
/// (jsonpb), so a value two levels deeper is read about twice as often: in profiles, that
/// decoding was over half of etcd's CPU for nested batches. A flat transaction succeeds exactly
/// when every write's own compares hold, and then each write's share of the answer is its own
/// operations' responses, in order. When a compare fails nothing is written; the batch goes
/// again nested, so each write learns its own outcome, and the next
/// ``nestedAfterConflict`` batches go nested straight away (conflicts come in runs, e.g.
/// re-applies of existing objects).
///
/// Correctness: etcd evaluates every compare of a request, flat or nested, against the state
/// before it, so two writes of a batch must not touch each other's keys. A batch never
/// holds two writes where one writes a key the other writes or compares; the later one waits
/// for the next batch. Writes with range compares are never batched. Every write of a batch
/// lands at the same revision. When etcd refuses a whole batch as invalid (too large, too many
/// operations) or because a lease one write puts under is gone, each write is retried alone, so
/// one bad write fails only itself (the scheduler's events go under a lease that can lapse in a
/// stall, beside its bindings).
final class WriteBatcher: Sendable {
    /// One queued transaction.
    struct Item: Sendable {
        let request: Etcd.TxnRequest
        let writes: Set<Data>
        let reads: Set<Data>
        let bytes: Int
        /// Compares and operations it adds to a flat batch.
        var compares: Int { request.compare.count }
        var operations: Int { request.success.count }
        let continuation: CheckedContinuation<Etcd.TxnResponse, any Error>
        /// Asked when the batch is formed, just before sending: false withdraws the write
        /// unsent, and its caller gets ``Withdrawn``. Must not wait, nor submit.
        var wanted: (@Sendable () -> Bool)?
    }

    /// A write whose `wanted` said no when its batch was formed: never sent.
    struct Withdrawn: Error {}

    private struct State {
        var queue: [Item] = []
        var inFlight = 0
        /// Batches still to send nested (not flat) after a flat one failed.
        var nestedAhead = 0
        var statistics = Statistics()
    }

    /// What this batcher sent so far (the same counts as its `/metrics` counters, per instance).
    struct Statistics: Sendable, Equatable {
        var alone = 0
        var flat = 0
        var nested = 0
        var flatConflicts = 0
    }

    /// A snapshot of ``Statistics``.
    var statistics: Statistics { state.withLock { $0.statistics } }

    let client: Etcd.Client
    /// Most nested transactions per request (etcd's `--max-txn-ops` defaults to 128 per level).
    let maxBatch: Int
    /// Most key and value bytes per request (etcd's request limit defaults to 1.5 MiB).
    let maxBytes: Int
    /// Most compares, and most operations, in one flat batch (etcd's `--max-txn-ops`, 128 by
    /// default).
    let maxOperations: Int
    /// Batches sent nested after a flat batch failed, before flat is tried again.
    static let nestedAfterConflict = 16
    /// Requests in flight at once.
    let maxInFlight: Int
    private let state = Mutex(State())
    private let metrics = BatchMetrics()

    init(client: Etcd.Client, maxBatch: Int = 64, maxBytes: Int = 512 * 1024, maxOperations: Int = 128, maxInFlight: Int = 1) {
        self.client = client
        self.maxBatch = max(1, maxBatch)
        self.maxBytes = maxBytes
        self.maxOperations = max(1, maxOperations)
        self.maxInFlight = max(1, maxInFlight)
    }

    /// Runs `request` (alone or in a batch) and returns its own answer, with the header of the
    /// request it went in.
    /// `wanted`, when given, is asked as the batch forms: false withdraws the write unsent
    /// (it throws ``Withdrawn``).
    func submit(
        _ request: Etcd.TxnRequest, writes: Set<Data>, reads: Set<Data>, bytes: Int, wanted: (@Sendable () -> Bool)? = nil
    ) async throws -> Etcd.TxnResponse {
        try await withCheckedThrowingContinuation { continuation in
            let item = Item(request: request, writes: writes, reads: reads, bytes: bytes, continuation: continuation, wanted: wanted)
            var withdrawn: [Item] = []
            let batch = state.withLock { state -> [Item]? in
                state.queue.append(item)
                guard state.inFlight < maxInFlight else { return nil }
                let batch = take(&state.queue, withdrawn: &withdrawn)
                if batch.isEmpty { return nil }
                state.inFlight += 1
                return batch
            }
            for item in withdrawn { item.continuation.resume(throwing: Withdrawn()) }
            if let batch { Task { await self.drain(batch) } }
        }
    }

    /// Sends `batch`, then whatever queued meanwhile, until the queue is empty.
    private func drain(_ first: [Item]) async {
        var batch = first
        while !batch.isEmpty {
            await send(batch)
            var withdrawn: [Item] = []
            batch = state.withLock { state -> [Item] in
                let next = take(&state.queue, withdrawn: &withdrawn)
                if next.isEmpty { state.inFlight -= 1 }
                return next
            }
            for item in withdrawn { item.continuation.resume(throwing: Withdrawn()) }
        }
    }

    /// Takes the next batch off the front of `queue`: in order, skipping writes that touch a
    /// key a taken one writes (or write one it reads), up to the count and byte limits.
    private func take(_ queue: inout [Item], withdrawn: inout [Item]) -> [Item] {
        var taken: [Item] = []
        var kept: [Item] = []
        var written = Set<Data>()
        var read = Set<Data>()
        var bytes = 0
        var compares = 0
        var operations = 0
        for item in queue {
            if let wanted = item.wanted, !wanted() {
                withdrawn.append(item)
                continue
            }
            let full =
                taken.count >= maxBatch
                || (!taken.isEmpty
                    && (bytes + item.bytes > maxBytes || compares + item.compares > maxOperations
                        || operations + item.operations > maxOperations))
            if full || !item.writes.isDisjoint(with: written) || !item.writes.isDisjoint(with: read)
                || !item.reads.isDisjoint(with: written)
            {
                kept.append(item)
                continue
            }
            taken.append(item)
            written.formUnion(item.writes)
            read.formUnion(item.reads)
            bytes += item.bytes
            compares += item.compares
            operations += item.operations
        }
        queue = kept
        return taken
    }

    private func send(_ batch: [Item]) async {
        guard batch.count > 1 else {
            for item in batch { await sendAlone(item) }
            return
        }
        let flat = state.withLock { state -> Bool in
            guard state.nestedAhead == 0 else {
                state.nestedAhead -= 1
                return false
            }
            return true
        }
        if flat, batch.allSatisfy({ $0.request.failure.isEmpty }), await sendFlat(batch) { return }
        await sendNested(batch)
    }

    /// Sends `batch` as one flat transaction. True when that settled every write (it committed,
    /// or etcd could not be reached); false when a compare failed or etcd refused the request,
    /// and nothing was written.
    private func sendFlat(_ batch: [Item]) async -> Bool {
        count(.flat, carrying: batch.count)
        let answer: Etcd.TxnResponse
        do {
            answer = try await client.txn(
                Etcd.TxnRequest(compare: batch.flatMap(\.request.compare), success: batch.flatMap(\.request.success)))
        } catch let error as EtcdError where error.code == .grpc && error.grpcCode == 3 {
            // InvalidArgument, nothing applied: e.g. an etcd run with a lower --max-txn-ops.
            // Nested batches keep each write's operations apart; use them for a while.
            state.withLock { $0.nestedAhead = Self.nestedAfterConflict }
            return false
        } catch let error as EtcdError where error.code == .leaseNotFound {
            // A write under a lease that is gone: etcd refused the whole request, nothing
            // applied. Alone, only that write fails.
            for item in batch { await sendAlone(item) }
            return true
        } catch {
            for item in batch { item.continuation.resume(throwing: error) }
            return true
        }
        guard answer.succeeded else {
            metrics.flatConflicts.increment()
            state.withLock { state in
                state.nestedAhead = Self.nestedAfterConflict
                state.statistics.flatConflicts += 1
            }
            return false
        }
        guard answer.responses.count == batch.reduce(0, { $0 + $1.operations }) else {
            for item in batch {
                item.continuation.resume(
                    throwing: EtcdError(
                        code: .decoding,
                        message: "a batched transaction's answer has \(answer.responses.count) responses, not one per operation"))
            }
            return true
        }
        var start = 0
        for item in batch {
            let end = start + item.operations
            item.continuation.resume(
                returning: Etcd.TxnResponse(header: answer.header, succeeded: true, responses: Array(answer.responses[start..<end])))
            start = end
        }
        return true
    }

    /// Sends `batch` as nested transactions of one request, each succeeding or failing alone.
    private func sendNested(_ batch: [Item]) async {
        count(.nested, carrying: batch.count)
        let answer: Etcd.TxnResponse
        do {
            answer = try await client.txn(Etcd.TxnRequest(success: batch.map { .txn($0.request) }))
        } catch let error as EtcdError where (error.code == .grpc && error.grpcCode == 3) || error.code == .leaseNotFound {
            // InvalidArgument, or a write under a lease that is gone: etcd refused the whole
            // request before applying any of it.
            for item in batch { await sendAlone(item) }
            return
        } catch {
            for item in batch { item.continuation.resume(throwing: error) }
            return
        }
        for (index, item) in batch.enumerated() {
            guard index < answer.responses.count, var inner = answer.responses[index].txnResponse else {
                item.continuation.resume(
                    throwing: EtcdError(code: .decoding, message: "a batched transaction's answer has no response \(index)"))
                continue
            }
            inner.header = answer.header
            item.continuation.resume(returning: inner)
        }
    }

    private func count(_ shape: BatchMetrics.Shape, carrying transactions: Int) {
        metrics.requests(shape, carrying: transactions)
        state.withLock { state in
            switch shape {
            case .alone: state.statistics.alone += 1
            case .flat: state.statistics.flat += 1
            case .nested: state.statistics.nested += 1
            }
        }
    }

    private func sendAlone(_ item: Item) async {
        count(.alone, carrying: 1)
        do {
            item.continuation.resume(returning: try await client.txn(item.request))
        } catch {
            item.continuation.resume(throwing: error)
        }
    }
}

/// The batcher's counters on `/metrics`: etcd transaction requests by shape, the store
/// transactions they carried (their ratio is the mean batch size), and flat batches refused
/// because a compare failed (each then resent nested).
struct BatchMetrics: Sendable {
    enum Shape: String { case alone, flat, nested }

    private let requests: [Shape: Counter]
    private let carried: [Shape: Counter]
    let flatConflicts = Counter(label: "gpuplane_store_flat_batch_conflicts_total")

    init() {
        let shapes: [Shape] = [.alone, .flat, .nested]
        requests = Dictionary(uniqueKeysWithValues: shapes.map {
            ($0, Counter(label: "gpuplane_store_txn_requests_total", dimensions: [("shape", $0.rawValue)]))
        })
        carried = Dictionary(uniqueKeysWithValues: shapes.map {
            ($0, Counter(label: "gpuplane_store_txn_batched_total", dimensions: [("shape", $0.rawValue)]))
        })
    }

    /// Counts one request of `shape` carrying `count` store transactions.
    func requests(_ shape: Shape, carrying count: Int) {
        requests[shape]?.increment()
        carried[shape]?.increment(by: count)
    }
}
