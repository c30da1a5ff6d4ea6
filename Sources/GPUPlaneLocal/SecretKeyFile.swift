import Foundation

/// The api-server's `secret-key-file` for local clusters and tests: one line
/// `<id> <base64 of 32 random bytes>`, mode 0600, as docs/operations.md tells operators to make it.
public enum SecretKeyFile {
    /// Writes a new key file with one fresh key named `id` into `directory` and returns its URL.
    public static func create(in directory: URL, id: String = "local-1") throws -> URL {
        var generator = SystemRandomNumberGenerator()
        let key = Data((0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) })
        let url = directory.appendingPathComponent("secret.key")
        let created = FileManager.default.createFile(
            atPath: url.path, contents: Data("\(id) \(key.base64EncodedString())\n".utf8), attributes: [.posixPermissions: 0o600])
        guard created else { throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: url.path]) }
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: url.path)
        return url
    }
}

extension TestEnvironment {
    /// A fresh secret key file in a scratch folder of its own (see ``SecretKeyFile``).
    public static func secretKeyFile() throws -> URL {
        try SecretKeyFile.create(in: try temporaryDirectory(prefix: "secret-key"))
    }
}
