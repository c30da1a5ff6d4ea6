import Testing

@Test func placeholder_GPUPlaneStoreTests() {}
