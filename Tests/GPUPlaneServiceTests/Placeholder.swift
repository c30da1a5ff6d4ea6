import Testing

@Test func placeholder_GPUPlaneServiceTests() {}
