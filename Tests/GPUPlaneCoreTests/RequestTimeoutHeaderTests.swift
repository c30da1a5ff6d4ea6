import GPUPlaneCore
import Testing

/// What a client's request timeout becomes in `Gpuplane-Timeout-Ms`: whole milliseconds the
/// api-server takes (1 to an hour), never a value it would refuse with 400.
@Suite struct RequestTimeoutHeaderTests {
    @Test func aTimeoutIsWholeMillisecondsTheApiServerTakes() {
        #expect(RequestTimeoutHeader.value(.milliseconds(400)) == "400")
        #expect(RequestTimeoutHeader.value(.seconds(5)) == "5000")
        #expect(RequestTimeoutHeader.value(.microseconds(1_500)) == "1")
        #expect(RequestTimeoutHeader.value(.microseconds(10)) == "1")
        #expect(RequestTimeoutHeader.value(.zero) == "1")
        #expect(RequestTimeoutHeader.value(.seconds(7_200)) == "3600000")
        #expect(RequestTimeoutHeader.value(.seconds(Int64.max)) == "3600000")
    }
}
