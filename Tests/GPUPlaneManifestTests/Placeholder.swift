import Testing

@Test func placeholder_GPUPlaneManifestTests() {}
