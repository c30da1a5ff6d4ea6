import GPUPlaneService
import Metrics
import Testing

@Suite("metrics")
struct MetricsExporterTests {
    @Test("render contains a counter that was incremented")
    func counterIsRendered() {
        MetricsExporter.bootstrap()
        #expect(MetricsExporter.bootstrap() == false)
        let counter = Counter(label: "gpuplane_test_placements_total", dimensions: [("mode", "shared")])
        counter.increment(by: 3)
        Gauge(label: "gpuplane.test.free_gpus").record(5)

        let text = MetricsExporter.render()
        #expect(text.contains("# TYPE gpuplane_test_placements_total counter"), "\(text)")
        #expect(text.contains(#"gpuplane_test_placements_total{mode="shared"} 3"#), "\(text)")
        #expect(text.contains("gpuplane_test_free_gpus 5"), "\(text)")
        // The bytes form carries the same lines. Not compared whole: other suites in this
        // process update their metrics meanwhile, and the heap gauges are read again when
        // their reading is older than HeapMetrics.maximumAge.
        let lines = String(decoding: MetricsExporter.renderBytes(), as: UTF8.self).split(separator: "\n")
        for line in ["# TYPE gpuplane_test_placements_total counter", #"gpuplane_test_placements_total{mode="shared"} 3"#, "gpuplane_test_free_gpus 5.0"] {
            #expect(lines.contains(Substring(line)), "\(lines)")
        }
        #expect(MetricsExporter.contentType == "text/plain; version=0.0.4; charset=utf-8")
    }
}
