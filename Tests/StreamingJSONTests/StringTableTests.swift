import Foundation
import StreamingJSON
import Testing

private struct Device: Codable, Equatable {
    var uuid: String
    var product: String
    var bus: String
}

private struct Host: Codable, Equatable {
    var name: String
    var devices: [Device]
    /// By device UUID, as a node's health repeats its GPUs' UUIDs.
    var health: [String: String]
    var seen: Date
}

/// The address of a string's UTF-8 storage: equal for two strings sharing one copy.
private func storage(_ string: String) -> UnsafeRawPointer? {
    string.utf8.withContiguousStorageIfAvailable { UnsafeRawPointer($0.baseAddress) } ?? nil
}

private func host(_ name: String, uuids: [String]) -> Host {
    Host(
        name: name,
        devices: uuids.enumerated().map { Device(uuid: $1, product: "NVIDIA H100 80GB HBM3", bus: "00000000:0\($0):00.0") },
        health: Dictionary(uniqueKeysWithValues: uuids.map { ($0, "healthy, no XID since boot") }),
        seen: Date(timeIntervalSince1970: 1_795_000_000))
}

@Suite struct StringTableTests {
    /// Decoding through a table reads the same values as without one.
    @Test func valuesAreTheSame() throws {
        let value = host("gpu-node-with-a-long-name", uuids: ["GPU-6f1e2a4c-0000-4000-8000-000000000001", "GPU-6f1e2a4c-0000-4000-8000-000000000002"])
        let data = try StreamingJSONEncoder.encode(value)
        let table = StringTable()
        #expect(try StreamingJSONDecoder.decode(Host.self, from: data, strings: table) == value)
        #expect(try StreamingJSONDecoder.decode(Host.self, from: data, strings: table) == value)
        #expect(try StreamingJSONDecoder.decode(Host.self, from: data) == value)
    }

    /// Equal strings in one object and across objects come back as one copy: a UUID in a
    /// device and again as a health key, a product name on every device of every host.
    @Test func equalStringsShareOneCopy() throws {
        let uuid = "GPU-6f1e2a4c-0000-4000-8000-00000000000a"
        let table = StringTable()
        let first = try StreamingJSONDecoder.decode(
            Host.self, from: try StreamingJSONEncoder.encode(host("node-a-with-a-long-name", uuids: [uuid, uuid + "b"])), strings: table)
        let second = try StreamingJSONDecoder.decode(
            Host.self, from: try StreamingJSONEncoder.encode(host("node-b-with-a-long-name", uuids: [uuid + "c"])), strings: table)
        let key = try #require(first.health.keys.first { $0 == uuid })
        #expect(storage(first.devices[0].uuid) != nil)
        #expect(storage(key) == storage(first.devices[0].uuid))
        #expect(storage(first.devices[1].product) == storage(first.devices[0].product))
        #expect(storage(second.devices[0].product) == storage(first.devices[0].product))
        #expect(storage(second.devices[0].bus) == storage(first.devices[0].bus))
        #expect(storage(second.health.values.first ?? "") == storage(first.health.values.first ?? ""))

        // Without a table, each decode has its own copies.
        let plain = try StreamingJSONDecoder.decode(Host.self, from: try StreamingJSONEncoder.encode(host("n", uuids: [uuid, uuid + "b"])))
        #expect(storage(plain.devices[1].product) != storage(plain.devices[0].product))
    }

    /// Short strings (stored inline) and the text of dates are never held; the table never
    /// holds more than its limit, and starts again empty when full.
    @Test func itHoldsOnlyWhatIsKeptAndNoMoreThanItsLimit() throws {
        let table = StringTable(limit: 3)
        _ = try StreamingJSONDecoder.decode(Host.self, from: try StreamingJSONEncoder.encode(host("short", uuids: [])), strings: table)
        #expect(table.count == 0)  // "short" is inline; the date's text is parsed, not kept
        for i in 0..<10 {
            let name = "a-name-long-enough-to-be-held-\(i)"
            #expect(table.share(name) == name)
            #expect(table.count <= 3)
        }
        #expect(table.count == 1)  // the tenth started a fresh table after the ninth filled it
        #expect(table.share("tiny") == "tiny")
        #expect(table.count == 1)
    }
}
