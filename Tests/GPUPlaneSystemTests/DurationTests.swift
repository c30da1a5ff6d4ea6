import GPUPlaneSystem
import Testing

@Suite struct DurationTests {
    @Test func seconds() {
        #expect(Duration.seconds(3).seconds == 3)
        #expect(Duration.milliseconds(1500).seconds == 1.5)
        #expect(Duration.nanoseconds(1).seconds == 1e-9)
        #expect(Duration.zero.seconds == 0)
        #expect(Duration.milliseconds(-250).seconds == -0.25)
    }

    @Test func wholeSecondsRoundUp() {
        #expect(Duration.seconds(2).wholeSecondsRoundedUp == 2)
        #expect(Duration.milliseconds(2100).wholeSecondsRoundedUp == 3)
        #expect(Duration.nanoseconds(1).wholeSecondsRoundedUp == 1)
        #expect(Duration.zero.wholeSecondsRoundedUp == 0)
    }
}
