import Testing

@Test func placeholder_GPUPlaneCLITests() {}
