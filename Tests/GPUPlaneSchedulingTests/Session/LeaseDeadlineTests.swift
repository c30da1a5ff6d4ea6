import Testing

@testable import GPUPlaneScheduling

struct LeaseDeadlineTests {
    @Test("a leader stops when no renewal reached it within the TTL less the margin")
    func leaderStops() {
        let deadline = LeaseDeadline(ttl: .seconds(3))
        #expect(deadline.margin == .milliseconds(500))
        #expect(deadline.passed(leading: true, sinceRenewal: .milliseconds(2_499)) == nil)
        #expect(deadline.passed(leading: true, sinceRenewal: .milliseconds(2_500)) != nil)
        #expect(LeaseDeadline(ttl: .seconds(1)).passed(leading: true, sinceRenewal: .milliseconds(750)) != nil)
        #expect(LeaseDeadline(ttl: .seconds(1)).passed(leading: true, sinceRenewal: .milliseconds(749)) == nil)
    }

    @Test("a standby keeps its place however late its renewals come: etcd's verdict ends its term")
    func standbyKeepsItsPlace() {
        let deadline = LeaseDeadline(ttl: .seconds(3))
        #expect(deadline.passed(leading: false, sinceRenewal: .seconds(2)) == nil)
        #expect(deadline.passed(leading: false, sinceRenewal: .seconds(60)) == nil)
    }
}
