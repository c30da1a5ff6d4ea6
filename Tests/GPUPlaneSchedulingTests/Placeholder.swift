import Testing

@Test func placeholder_GPUPlaneSchedulingTests() {}
