import Testing

@testable import StreamingJSON

@Suite struct JSONIndexSizeTests {
    /// A document's token list is the largest transient of decoding a big etcd watch line
    /// (some 165,000 tokens for 1.3 MB): each token stays at 20 bytes (it was 48).
    @Test func aTokenTakesTwentyBytes() {
        #expect(MemoryLayout<JSONIndex.Token>.stride == 20)
    }
}
