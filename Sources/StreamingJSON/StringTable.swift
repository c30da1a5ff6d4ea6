import GPUPlaneSystem

/// Equal strings decoded into long-lived objects, kept as one copy.
///
/// A decoded object's strings each get storage of their own: 5,000 nodes' caches held the
/// same GPU product name, PCI bus ids, label values and condition reasons thousands of times,
/// and every GPU's UUID twice (in the node's spec and again in its health). A decoder given a
/// table answers a string the table already holds with the held copy, which shares its storage.
///
/// Only strings Swift stores out of line (more than 15 UTF-8 bytes) are looked up; shorter ones
/// cost no allocation to begin with. The table holds at most `limit` strings: when full it
/// starts again empty, so strings of objects long deleted never pile up, and the ones still in
/// use come back at their next decode. Safe to share between threads.
///
/// ```swift
/// let strings = StringTable()
/// let node = try StreamingJSONDecoder.decode(Node.self, from: data, strings: strings)
/// ```
public final class StringTable: Sendable {
    /// The most strings held before the table starts again empty.
    public let limit: Int
    private let held: Locked<Set<String>>

    /// An empty table holding at most `limit` strings (at least one).
    public init(limit: Int = 16_384) {
        self.limit = max(1, limit)
        self.held = Locked([])
    }

    /// The held string equal to `string`, holding `string` first when there is none.
    public func share(_ string: String) -> String {
        guard string.utf8.count > 15 else { return string }
        return held.withLock { held in
            // Full: start again, unless the string is already held.
            if held.count >= limit, !held.contains(string) { held.removeAll(keepingCapacity: true) }
            return held.insert(string).memberAfterInsert
        }
    }

    /// How many strings it holds now.
    public var count: Int { held.withLock { $0.count } }
}
