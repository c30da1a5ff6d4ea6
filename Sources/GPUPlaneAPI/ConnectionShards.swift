import GPUPlaneSystem
import HummingbirdCore
import Logging
import NIOCore
import ServiceLifecycle

/// The shards an api-server's connections are spread over: at 10,000 connections, groups of
/// about 150 (``ShardedConnections``).
let connectionShards = 64

/// Runs a server's connections in several task groups instead of Hummingbird's one.
///
/// Hummingbird's server runs every accepted connection as a child of one task group, and
/// Swift's runtime walks a group's list of children when a child is added or removed: each
/// connection opened or closed cost time in proportion to the connections already open, under
/// the group's lock. An api-server holding 5,000 nodes has some 10,000 open (a watch and calls
/// a node). Measured with `gpuplane-bench connections --open 10000` (docs/benchmarks.md, "One
/// task group per connection shard"): with 10,000 idle connections held, a new connection's
/// request cost the api-server 1.6–4.8 times the CPU it cost on an idle one, and after those
/// 10,000 closed at once it answered no one for 2–3 s; sharded, 0.9–1.3 times and 0.4 s.
///
/// Here each connection is handed to one of ``connectionShards`` shards, round robin; the first
/// connection a shard gets hosts it: its task (a child of the server's group, so cancelled
/// and shut down with it) runs a group of its own for the shard's connections. The server's
/// group holds the hosts and the brief hand-offs, each shard's group an even share of the
/// connections. On graceful shutdown a shard stops taking connections, runs those handed to
/// it and waits for them as the server's group waited before; one accepted after that runs
/// in its hand-off's own task. Every connection is handled exactly once, even when the server
/// is cancelled (an unhandled NIO channel traps when it is released).
struct ShardedConnections<Inner: ServerChildChannel>: ServerChildChannel {
    typealias Value = Inner.Value

    private let inner: Inner
    private let shards: [ConnectionShard<(Value, Logger)>]
    private let next = Locked(0)

    init(_ inner: Inner, shards: Int = connectionShards) {
        self.inner = inner
        self.shards = (0..<max(1, shards)).map { _ in ConnectionShard() }
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        inner.setup(channel: channel, logger: logger)
    }

    func handle(value: Value, logger: Logger) async {
        let shard = shards[next.withLock { index in
            defer { index = (index + 1) % shards.count }
            return index
        }]
        switch shard.offer((value, logger)) {
        case .queued:
            return
        case .closed:
            await inner.handle(value: value, logger: logger)
        case .host:
            await host(shard, first: (value, logger))
        }
    }

    /// Runs `shard`'s connections, `first` among them, until the server shuts down or is
    /// cancelled and they have all ended.
    private func host(_ shard: ConnectionShard<(Value, Logger)>, first: (Value, Logger)) async {
        let inner = self.inner
        await withGracefulShutdownHandler {
            await withTaskCancellationHandler {
                await withDiscardingTaskGroup { group in
                    group.addTask { await inner.handle(value: first.0, logger: first.1) }
                    while let batch = await shard.next() {
                        for (value, logger) in batch {
                            group.addTask { await inner.handle(value: value, logger: logger) }
                        }
                    }
                }
            } onCancel: {
                shard.close()
            }
        } onGracefulShutdown: {
            shard.close()
        }
    }
}

/// The hand-off between a server's accepted connections and the task that runs a shard of
/// them (``ShardedConnections``): a queue with one reader that never drops what it was given.
final class ConnectionShard<Item: Sendable>: Sendable {
    /// What ``offer(_:)`` did with an item.
    enum Offer: Equatable {
        /// The shard had no host: the caller hosts it, starting with the item.
        case host
        /// Queued for the host.
        case queued
        /// The shard is closed: the caller runs the item itself.
        case closed
    }

    private struct State {
        var hosted = false
        var closed = false
        var pending: [Item] = []
        var waiter: CheckedContinuation<[Item]?, Never>?
    }

    private let state = Locked(State())

    init() {}

    /// Hands `item` to the shard's host, makes the caller the host, or refuses it when closed.
    func offer(_ item: Item) -> Offer {
        let (offer, waiter) = state.withLock { state -> (Offer, CheckedContinuation<[Item]?, Never>?) in
            if state.closed { return (.closed, nil) }
            if !state.hosted {
                state.hosted = true
                return (.host, nil)
            }
            if let waiter = state.waiter {
                state.waiter = nil
                return (.queued, waiter)
            }
            state.pending.append(item)
            return (.queued, nil)
        }
        waiter?.resume(returning: [item])
        return offer
    }

    /// The items offered since the last call, waiting for one; nil once the shard is closed
    /// and every item has been taken.
    func next() async -> [Item]? {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state -> [Item]?? in
                if !state.pending.isEmpty {
                    defer { state.pending = [] }
                    return .some(state.pending)
                }
                if state.closed { return .some(nil) }
                state.waiter = continuation
                return .none
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }

    /// Whether the host waits in ``next()`` for an item.
    var isWaiting: Bool { state.withLock { $0.waiter != nil } }

    /// Takes no more items; the host still gets those already offered.
    func close() {
        let waiter = state.withLock { state -> CheckedContinuation<[Item]?, Never>? in
            state.closed = true
            defer { state.waiter = nil }
            return state.pending.isEmpty ? state.waiter : nil
        }
        waiter?.resume(returning: nil)
    }
}
