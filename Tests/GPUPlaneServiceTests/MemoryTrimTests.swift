import GPUPlaneService
import Testing

/// `memory-trim-interval`: 0 turns the trim off; a nonzero interval under a second (a trim
/// walks every arena, so it would run nearly all the time) stops the daemon naming the key.
@Suite struct MemoryTrimTests {
    @Test func anIntervalUnderASecondNamesTheKey() throws {
        for value in ["500ms", "0.2", "999ms"] {
            let config = try Configuration(keys: [MemoryTrim.key], environment: [:], arguments: ["--memory-trim-interval", value])
            do {
                try MemoryTrim.start(config)
                Issue.record("\(value) was accepted")
            } catch let error as ConfigurationError {
                #expect(error.code == .invalidValue && error.key == "memory-trim-interval", "\(error)")
                #expect(error.description.contains("at least 1s"), "\(error)")
            }
        }
        // 0: never, started without a thread and without complaint.
        try MemoryTrim.start(try Configuration(keys: [MemoryTrim.key], environment: [:], arguments: ["--memory-trim-interval", "0"]))
    }
}
