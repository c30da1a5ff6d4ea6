import Testing

@Test func placeholder_GPUPlaneCoreTests() {}
