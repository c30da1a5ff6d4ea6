import GPUPlaneService
import GPUPlaneSystem
import Testing

/// The heap's gauges follow what the process allocates: 256 MiB held in small live blocks
/// (far more than the process's other tests allocate or free meanwhile) shows in
/// `gpuplane_process_heap_in_use_bytes` at the next scrape, and is gone from it once freed.
@Suite struct HeapMetricsTests {
    private func gauge(_ name: String) throws -> Double {
        let line = try #require(MetricsExporter.render().split(separator: "\n").first { $0.hasPrefix(name + " ") }, "no \(name)")
        return try #require(line.split(separator: " ").last.flatMap { Double($0) })
    }

    @Test func theGaugesFollowLiveAllocations() throws {
        MetricsExporter.bootstrap()
        HeapMetrics.register()
        let age = HeapMetrics.maximumAge
        defer { HeapMetrics.maximumAge = age }  // other suites in this process render too
        HeapMetrics.maximumAge = .zero  // every render reads the heap
        let before = try gauge("gpuplane_process_heap_in_use_bytes")
        #expect(before > 0)
        // 65,536 blocks of 4 KiB: below malloc's mmap threshold, so from the arenas.
        var blocks: [UnsafeMutableRawPointer] = []
        for _ in 0..<65_536 {
            let block = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 16)
            block.initializeMemory(as: UInt8.self, repeating: 1, count: 4096)
            blocks.append(block)
        }
        let held = try gauge("gpuplane_process_heap_in_use_bytes")
        #expect(held - before >= 192 * 1_048_576, "256 MiB allocated, the gauge rose \(held - before) bytes")
        for block in blocks { block.deallocate() }
        let after = try gauge("gpuplane_process_heap_in_use_bytes")
        #expect(held - after >= 192 * 1_048_576, "256 MiB freed, the gauge fell \(held - after) bytes")
        #expect(try gauge("gpuplane_process_heap_free_bytes") >= 0)

        // Scrapes closer together than maximumAge show the last reading (a reading walks the
        // heap's free lists under malloc's locks).
        HeapMetrics.maximumAge = .seconds(3600)
        let shown = try gauge("gpuplane_process_heap_in_use_bytes")
        let more = (0..<16_384).map { _ in UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 16) }
        defer { for block in more { block.deallocate() } }
        #expect(try gauge("gpuplane_process_heap_in_use_bytes") == shown)
        #expect(HeapUsage.current().inUse > 0)
    }
}
