import Foundation
import Testing

@testable import EtcdClient

@Suite struct LineSplitterTests {
    @Test func splitsWhateverTheChunking() {
        let lines = (0..<50).map { #"{"result":{"n":\#($0),"pad":"\#(String(repeating: "x", count: $0 * 7))"}}"# }
        let bytes = Array(lines.joined(separator: "\n").utf8) + Array("\n".utf8)
        for chunk in [1, 2, 3, 7, 64, 1000, bytes.count] {
            var splitter = LineSplitter()
            var out: [Data] = []
            var i = 0
            while i < bytes.count {
                let end = min(i + chunk, bytes.count)
                out += bytes[i..<end].withUnsafeBytes { splitter.append($0) }
                i = end
            }
            if let rest = splitter.flush() { out.append(rest) }
            #expect(out.map { String(decoding: $0, as: UTF8.self) } == lines, "chunk \(chunk)")
        }
    }

    @Test func keepsAnUnterminatedLastLine() {
        var splitter = LineSplitter()
        let first = Array("a\nb".utf8).withUnsafeBytes { splitter.append($0) }
        #expect(first == [Data("a".utf8)])
        #expect(splitter.flush() == Data("b".utf8))
    }

    /// A line of megabytes (a watch's large batch) is not kept allocated for the rest of the
    /// stream's life; a small one's buffer is kept for the next line.
    @Test func aLargeLineDoesNotKeepItsBuffer() {
        var splitter = LineSplitter()
        let large = Array(repeating: UInt8(ascii: "x"), count: 2_000_000)
        #expect(large.withUnsafeBytes { splitter.append($0) }.isEmpty)
        #expect(splitter.bufferCapacity >= large.count)
        let lines = Array("\nsmall".utf8).withUnsafeBytes { splitter.append($0) }
        #expect(lines.map(\.count) == [large.count])
        #expect(splitter.bufferCapacity <= LineSplitter.keptCapacity)
        _ = Array("\n".utf8).withUnsafeBytes { splitter.append($0) }
        #expect(splitter.bufferCapacity > 0)
    }

    @Test func prefixEnd() {
        #expect(Etcd.prefixEnd(Data("ab".utf8)) == Data("ac".utf8))
        #expect(Etcd.prefixEnd(Data([0x61, 0xff])) == Data([0x62]))
        #expect(Etcd.prefixEnd(Data([0xff])) == Data([0]))
    }
}
