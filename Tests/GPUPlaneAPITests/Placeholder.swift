import Testing

@Test func placeholder_api() {}
