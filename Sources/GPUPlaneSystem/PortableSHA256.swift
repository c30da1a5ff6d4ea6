/// SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104) in plain Swift, for the modules that must not
/// link Foundation (swift-crypto does): the node-agent checks the api-server's signed requests
/// with it. Checked against RFC 4231's vectors and swift-crypto in `HMACSHA256Tests`.
public enum PortableSHA256 {
    private static let k: [UInt32] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ]

    /// The 32-byte digest of `message`.
    public static func hash<Bytes: Collection<UInt8>>(_ message: Bytes) -> [UInt8] {
        var hasher = Hasher()
        hasher.update(message)
        return hasher.finalize()
    }

    /// SHA-256 fed piece by piece, for data too large to hold (a weights file hashed as it
    /// arrives).
    public struct Hasher: Sendable {
        private var h: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32) =
            (0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19)
        private var buffer: [UInt8] = []
        private var w = [UInt32](repeating: 0, count: 64)
        /// Bytes fed so far.
        public private(set) var count: Int64 = 0

        /// A hasher that has been fed nothing.
        public init() { buffer.reserveCapacity(64) }

        /// Feeds `bytes`.
        public mutating func update(_ bytes: UnsafeRawBufferPointer) {
            count += Int64(bytes.count)
            var offset = 0
            if !buffer.isEmpty {
                let take = min(64 - buffer.count, bytes.count)
                buffer.append(contentsOf: bytes[0..<take])
                offset = take
                if buffer.count == 64 {
                    let block = buffer
                    block.withUnsafeBytes { compress($0, at: 0) }
                    buffer.removeAll(keepingCapacity: true)
                }
            }
            while bytes.count - offset >= 64 {
                compress(bytes, at: offset)
                offset += 64
            }
            if offset < bytes.count { buffer.append(contentsOf: bytes[offset...]) }
        }

        /// Feeds `bytes`.
        public mutating func update<Bytes: Collection<UInt8>>(_ bytes: Bytes) {
            Array(bytes).withUnsafeBytes { update($0) }
        }

        /// The 32-byte digest of everything fed (the hasher is spent afterwards).
        public mutating func finalize() -> [UInt8] {
            let bitLength = UInt64(count) &* 8
            var tail = buffer
            tail.append(0x80)
            while tail.count % 64 != 56 { tail.append(0) }
            for shift in stride(from: 56, through: 0, by: -8) { tail.append(UInt8(truncatingIfNeeded: bitLength >> UInt64(shift))) }
            tail.withUnsafeBytes { raw in
                var offset = 0
                while offset < raw.count {
                    compress(raw, at: offset)
                    offset += 64
                }
            }
            buffer.removeAll()
            var digest: [UInt8] = []
            digest.reserveCapacity(32)
            for word in [h.0, h.1, h.2, h.3, h.4, h.5, h.6, h.7] {
                for shift in stride(from: 24, through: 0, by: -8) { digest.append(UInt8(truncatingIfNeeded: word >> UInt32(shift))) }
            }
            return digest
        }

        /// The digest as 64 lowercase hex digits.
        public mutating func finalizeHex() -> String { PortableSHA256.hex(finalize()) }

        @inline(__always) private static func rotate(_ x: UInt32, _ n: UInt32) -> UInt32 { (x >> n) | (x << (32 - n)) }

        private mutating func compress(_ raw: UnsafeRawBufferPointer, at block: Int) {
            for i in 0..<16 {
                let j = block + i * 4
                w[i] = UInt32(raw[j]) << 24 | UInt32(raw[j + 1]) << 16 | UInt32(raw[j + 2]) << 8 | UInt32(raw[j + 3])
            }
            for i in 16..<64 {
                let s0 = Self.rotate(w[i - 15], 7) ^ Self.rotate(w[i - 15], 18) ^ (w[i - 15] >> 3)
                let s1 = Self.rotate(w[i - 2], 17) ^ Self.rotate(w[i - 2], 19) ^ (w[i - 2] >> 10)
                w[i] = w[i - 16] &+ s0 &+ w[i - 7] &+ s1
            }
            var (a, b, c, d, e, f, g, hh) = h
            for i in 0..<64 {
                let s1 = Self.rotate(e, 6) ^ Self.rotate(e, 11) ^ Self.rotate(e, 25)
                let choice = (e & f) ^ (~e & g)
                let t1 = hh &+ s1 &+ choice &+ PortableSHA256.k[i] &+ w[i]
                let s0 = Self.rotate(a, 2) ^ Self.rotate(a, 13) ^ Self.rotate(a, 22)
                let majority = (a & b) ^ (a & c) ^ (b & c)
                (hh, g, f, e, d, c, b, a) = (g, f, e, d &+ t1, c, b, a, t1 &+ s0 &+ majority)
            }
            h = (h.0 &+ a, h.1 &+ b, h.2 &+ c, h.3 &+ d, h.4 &+ e, h.5 &+ f, h.6 &+ g, h.7 &+ hh)
        }
    }

    /// HMAC-SHA256 of `message` under `key`: 32 bytes.
    public static func hmac<Key: Collection<UInt8>, Message: Collection<UInt8>>(key: Key, message: Message) -> [UInt8] {
        var block = key.count > 64 ? hash(key) : Array(key)
        block += [UInt8](repeating: 0, count: 64 - block.count)
        let inner = hash(block.map { $0 ^ 0x36 } + Array(message))
        return hash(block.map { $0 ^ 0x5c } + inner)
    }

    /// Whether `a` and `b` are equal, in time that depends only on their lengths.
    public static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for (x, y) in zip(a, b) { difference |= x ^ y }
        return difference == 0
    }

    /// `bytes` as lowercase hexadecimal.
    public static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// The bytes of lowercase or uppercase hexadecimal `text`; nil when it is not hexadecimal.
    public static func bytes(hex text: String) -> [UInt8]? {
        let utf8 = Array(text.utf8)
        guard utf8.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(utf8.count / 2)
        var index = 0
        while index < utf8.count {
            guard let high = nibble(utf8[index]), let low = nibble(utf8[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        return bytes
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
