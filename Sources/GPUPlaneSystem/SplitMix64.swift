/// SplitMix64: a small, fast, seedable generator, so shuffles (the scheduler's) and generated
/// inputs (the fuzz tests') can be replayed from their seed.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    /// A generator starting from `seed`.
    public init(seed: UInt64) { state = seed }

    /// The next value.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// One draw from `seed` mixed with `salt`, without keeping state.
    public static func draw(seed: UInt64, salt: UInt64) -> UInt64 {
        var generator = SplitMix64(seed: seed ^ (salt &* 0xD6E8_FEB8_6659_FD93))
        return generator.next()
    }
}
