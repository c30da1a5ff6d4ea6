import Testing

@Test func placeholder_GPUPlaneAgentTests() {}
