import GPUPlaneCore
import Testing

@Suite("object metadata")
struct ObjectMetaTests {
    /// New uids are lower-case RFC 4122 version 4 UUIDs, and do not repeat.
    @Test func newUIDsAreVersion4UUIDs() {
        let uids = (0..<2000).map { _ in ObjectMeta.newUID() }
        #expect(Set(uids).count == uids.count)
        for uid in uids.prefix(200) {
            let bytes = Array(uid.utf8)
            #expect(bytes.count == 36, "\(uid)")
            for (index, byte) in bytes.enumerated() {
                if [8, 13, 18, 23].contains(index) {
                    #expect(byte == UInt8(ascii: "-"), "\(uid)")
                } else {
                    #expect((UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte), "\(uid)")
                }
            }
            #expect(bytes[14] == UInt8(ascii: "4"), "version nibble of \(uid)")
            #expect("89ab".utf8.contains(bytes[19]), "variant nibble of \(uid)")
        }
        // Every random nibble takes more than one value across the sample (none is stuck).
        for index in 0..<36 where ![8, 13, 14, 18, 23].contains(index) {
            let values = Set(uids.map { Array($0.utf8)[index] })
            #expect(values.count > (index == 19 ? 3 : 8), "position \(index) barely varies")
        }
    }
}
