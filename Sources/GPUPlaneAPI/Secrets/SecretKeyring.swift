import Crypto
import Foundation
import GPUPlaneCore

/// The api-server's keys for sealing secrets at rest (AES-256-GCM), read from its
/// `secret-key-file`. Only the api-server holds them: etcd, the scheduler and the node-agents
/// see sealed bytes or, for the node a replica is bound to, that replica's opened values.
///
/// The key file holds one key a line, `<id> <base64 of 32 random bytes>`; `#` starts a comment.
/// The first key seals what is written from now on; every key opens what was sealed with it, so
/// a key is rotated by putting a new line first and keeping the old ones until every secret was
/// written again. The file must be readable by its owner alone (mode 0600 or 0400).
///
/// ```sh
/// umask 077; printf 'k1 %s\n' "$(head -c 32 /dev/urandom | base64)" > /etc/gpuplane/secret.key
/// ```
public struct SecretKeyring: Sendable {
    /// The id of the key new values are sealed with.
    public let sealingKeyID: String
    /// The keys' bytes by id (`SymmetricKey` is not `Sendable`; one is made per use).
    private let keys: [String: Data]

    /// A keyring of `keys` (id and 32 bytes each); the first seals.
    /// - Throws: ``SecretKeyringError/Code/invalidKey`` for no key, a key not 32 bytes long, a
    ///   bad id or an id given twice.
    public init(keys: [(id: String, key: Data)]) throws(SecretKeyringError) {
        guard let first = keys.first else { throw SecretKeyringError(.invalidKey, "the key file holds no key") }
        var table: [String: Data] = [:]
        for (id, key) in keys {
            guard Self.isKeyID(id) else {
                throw SecretKeyringError(.invalidKey, "key id '\(id)' must be 1-64 letters, digits, '.', '_' or '-'")
            }
            guard key.count == 32 else {
                throw SecretKeyringError(.invalidKey, "key \(id) is \(key.count) bytes; AES-256-GCM needs 32 (head -c 32 /dev/urandom | base64)")
            }
            guard table[id] == nil else { throw SecretKeyringError(.invalidKey, "key id \(id) appears twice") }
            table[id] = key
        }
        sealingKeyID = first.id
        self.keys = table
    }

    /// The keyring in the key file at `path`.
    /// - Throws: ``SecretKeyringError/Code/unreadable`` when it cannot be read,
    ///   ``SecretKeyringError/Code/insecureFile`` when group or others may read it,
    ///   ``SecretKeyringError/Code/invalidKey`` for a bad line (naming its number, never its text).
    public static func load(path: String) throws(SecretKeyringError) -> SecretKeyring {
        let attributes: [FileAttributeKey: Any]
        let data: Data
        do {
            attributes = try FileManager.default.attributesOfItem(atPath: path)
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw SecretKeyringError(.unreadable, "cannot read the secret key file \(path): \(error.localizedDescription)")
        }
        if let mode = (attributes[.posixPermissions] as? NSNumber)?.intValue, mode & 0o077 != 0 {
            throw SecretKeyringError(
                .insecureFile, "the secret key file \(path) has mode \(String(mode, radix: 8)); make it readable by its owner alone (chmod 600 \(path))")
        }
        var keys: [(id: String, key: Data)] = []
        for (number, raw) in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespacesAndNewlines)
            if line.isEmpty || line.hasPrefix("#") { continue }
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count == 2, let key = Data(base64Encoded: String(fields[1])) else {
                throw SecretKeyringError(.invalidKey, "line \(number + 1) of \(path) is not '<id> <base64 of 32 bytes>'")
            }
            keys.append((String(fields[0]), key))
        }
        return try SecretKeyring(keys: keys)
    }

    /// Whether `id` may name a key: 1–64 letters, digits, `.`, `_`, `-`.
    static func isKeyID(_ id: String) -> Bool {
        !id.isEmpty && id.utf8.count <= 64 && id.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) }
    }

    /// The authenticated data a secret's values are sealed with: they open only as that secret.
    static func associatedData(tenant: String, name: String) -> Data {
        Data("gpuplane/secrets/\(tenant)/\(name)".utf8)
    }

    /// `values` sealed for secret `name` of `tenant` with the sealing key and a fresh nonce.
    public func seal(_ values: [String: String], tenant: String, name: String) throws(SecretKeyringError) -> SealedData {
        guard let bytes = keys[sealingKeyID] else { throw SecretKeyringError(.unknownKey, "no key \(sealingKeyID)") }
        do {
            let key = SymmetricKey(data: bytes)
            let plain = try GPUPlaneJSON.encode(values)
            let box = try AES.GCM.seal(plain, using: key, authenticating: Self.associatedData(tenant: tenant, name: name))
            guard let combined = box.combined else { throw SecretKeyringError(.sealing, "AES-GCM gave no combined box") }
            return SealedData(keyID: sealingKeyID, box: combined.base64EncodedString())
        } catch let error as SecretKeyringError {
            throw error
        } catch {
            throw SecretKeyringError(.sealing, "sealing failed: \(type(of: error))")
        }
    }

    /// The values of secret `name` of `tenant`, opened.
    /// - Throws: ``SecretKeyringError/Code/unknownKey`` when the key it was sealed with is not in
    ///   the key file; ``SecretKeyringError/Code/opening`` when it does not open (another key of
    ///   that id, altered bytes, or another secret's box).
    public func open(_ sealed: SealedData, tenant: String, name: String) throws(SecretKeyringError) -> [String: String] {
        guard sealed.algorithm == SealedData.aes256GCM else {
            throw SecretKeyringError(.opening, "secret \(tenant)/\(name) is sealed with \(sealed.algorithm), not \(SealedData.aes256GCM)")
        }
        guard let bytes = keys[sealed.keyID] else {
            throw SecretKeyringError(
                .unknownKey, "secret \(tenant)/\(name) is sealed with key \(sealed.keyID), which the secret key file does not hold")
        }
        do {
            guard let combined = Data(base64Encoded: sealed.box) else { throw SecretKeyringError(.opening, "not base64") }
            let box = try AES.GCM.SealedBox(combined: combined)
            let key = SymmetricKey(data: bytes)
            let plain = try AES.GCM.open(box, using: key, authenticating: Self.associatedData(tenant: tenant, name: name))
            return try JSONDecoder().decode([String: String].self, from: plain)
        } catch {
            throw SecretKeyringError(.opening, "secret \(tenant)/\(name) does not open with key \(sealed.keyID)")
        }
    }
}

/// Why a key file could not be used or a value not sealed or opened. Its message never holds a
/// key or a value.
public struct SecretKeyringError: Error, Sendable, CustomStringConvertible {
    /// What went wrong.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let rawValue: String
        /// The key file cannot be read.
        public static let unreadable = Code(rawValue: "unreadable")
        /// The key file may be read by group or others.
        public static let insecureFile = Code(rawValue: "insecure_file")
        /// A key or a line of the key file is invalid.
        public static let invalidKey = Code(rawValue: "invalid_key")
        /// A value was sealed with a key the file does not hold.
        public static let unknownKey = Code(rawValue: "unknown_key")
        /// Sealing failed.
        public static let sealing = Code(rawValue: "sealing")
        /// A sealed value does not open.
        public static let opening = Code(rawValue: "opening")
        public var description: String { rawValue }
    }

    /// What went wrong.
    public let code: Code
    /// In words, without a key or a value.
    public let message: String

    /// Makes an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
