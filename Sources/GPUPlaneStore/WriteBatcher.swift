import EtcdClient
import Foundation
import Synchronization

/// Group commit for store transactions: while a write is in flight, the ones that arrive queue
/// up and go to etcd together as one transaction of nested transactions (etcd 3.3+), each of
/// which keeps its own compares and succeeds or fails on its own.
///
/// Why: etcd's cost per request (gateway JSON, gRPC, a raft proposal, an fsync batch) dwarfs
/// its cost per key, so under concurrent writes N transactions in one request cost a fraction
/// of N requests. An idle store sends a write at once, alone, exactly as before: batching only
/// forms behind writes already in flight, so it adds no latency.
///
/// Correctness: etcd evaluates every nested compare against the state before the outer
/// transaction, so two nested transactions must not touch each other's keys. A batch never
/// holds two writes where one writes a key the other writes or compares; the later one waits
/// for the next batch. Writes with range compares are never batched. Every write of a batch
/// lands at the same revision. When etcd refuses a whole batch as invalid (too large, too many
/// operations), each write is retried alone, so one bad write fails only itself.
final class WriteBatcher: Sendable {
    /// One queued transaction.
    struct Item: Sendable {
        let request: Etcd.TxnRequest
        let writes: Set<Data>
        let reads: Set<Data>
        let bytes: Int
        let continuation: CheckedContinuation<Etcd.TxnResponse, any Error>
    }

    private struct State {
        var queue: [Item] = []
        var inFlight = 0
    }

    let client: Etcd.Client
    /// Most nested transactions per request (etcd's `--max-txn-ops` defaults to 128 per level).
    let maxBatch: Int
    /// Most key and value bytes per request (etcd's request limit defaults to 1.5 MiB).
    let maxBytes: Int
    /// Requests in flight at once.
    let maxInFlight: Int
    private let state = Mutex(State())

    init(client: Etcd.Client, maxBatch: Int = 64, maxBytes: Int = 512 * 1024, maxInFlight: Int = 1) {
        self.client = client
        self.maxBatch = max(1, maxBatch)
        self.maxBytes = maxBytes
        self.maxInFlight = max(1, maxInFlight)
    }

    /// Runs `request` (alone or in a batch) and returns its own answer, with the header of the
    /// request it went in.
    func submit(_ request: Etcd.TxnRequest, writes: Set<Data>, reads: Set<Data>, bytes: Int) async throws -> Etcd.TxnResponse {
        try await withCheckedThrowingContinuation { continuation in
            let item = Item(request: request, writes: writes, reads: reads, bytes: bytes, continuation: continuation)
            let batch = state.withLock { state -> [Item]? in
                state.queue.append(item)
                guard state.inFlight < maxInFlight else { return nil }
                state.inFlight += 1
                return take(&state.queue)
            }
            if let batch { Task { await self.drain(batch) } }
        }
    }

    /// Sends `batch`, then whatever queued meanwhile, until the queue is empty.
    private func drain(_ first: [Item]) async {
        var batch = first
        while !batch.isEmpty {
            await send(batch)
            batch = state.withLock { state -> [Item] in
                let next = take(&state.queue)
                if next.isEmpty { state.inFlight -= 1 }
                return next
            }
        }
    }

    /// Takes the next batch off the front of `queue`: in order, skipping writes that touch a
    /// key a taken one writes (or write one it reads), up to the count and byte limits.
    private func take(_ queue: inout [Item]) -> [Item] {
        var taken: [Item] = []
        var kept: [Item] = []
        var written = Set<Data>()
        var read = Set<Data>()
        var bytes = 0
        for item in queue {
            let full = taken.count >= maxBatch || (!taken.isEmpty && bytes + item.bytes > maxBytes)
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
        }
        queue = kept
        return taken
    }

    private func send(_ batch: [Item]) async {
        guard batch.count > 1 else {
            for item in batch { await sendAlone(item) }
            return
        }
        let answer: Etcd.TxnResponse
        do {
            answer = try await client.txn(Etcd.TxnRequest(success: batch.map { .txn($0.request) }))
        } catch let error as EtcdError where error.code == .grpc && error.grpcCode == 3 {
            // InvalidArgument: etcd refused the whole request before applying any of it.
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

    private func sendAlone(_ item: Item) async {
        do {
            item.continuation.resume(returning: try await client.txn(item.request))
        } catch {
            item.continuation.resume(throwing: error)
        }
    }
}
