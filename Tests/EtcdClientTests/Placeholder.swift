import Testing

@Test func placeholder_EtcdClientTests() {}
