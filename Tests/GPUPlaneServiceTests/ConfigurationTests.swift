import Foundation
import GPUPlaneService
import GPUPlaneTestSupport
import Testing

@Suite("configuration")
struct ConfigurationTests {
    let keys = [
        ConfigurationKey("listen-port", .int, default: "8080", help: "HTTP port"),
        ConfigurationKey("etcd.endpoints", .list, help: "etcd gateway URLs"),
        ConfigurationKey("leader-lease", .duration, default: "15s"),
        ConfigurationKey("verbose", .bool, default: "false"),
        ConfigurationKey("node-name", .string),
    ]
    let file = (
        path: "/etc/gpuplane/scheduler.conf",
        contents: """
            # scheduler settings
            listen-port = 9000
            etcd.endpoints = http://10.0.0.1:2379, http://10.0.0.2:2379 ,

            leader-lease = 500ms
            node-name = "  padded  "
            """
    )

    @Test("flags beat environment beat file beat defaults")
    func precedence() throws {
        let fileOnly = try Configuration(keys: keys, file: file)
        #expect(try fileOnly.int("listen-port") == 9000)
        #expect(fileOnly.source(of: "listen-port") == .file(path: "/etc/gpuplane/scheduler.conf", line: 2))

        let withEnvironment = try Configuration(
            keys: keys, file: file, environment: ["GPUPLANE_LISTEN_PORT": "9100", "GPUPLANE_OTHER": "x"])
        #expect(try withEnvironment.int("listen-port") == 9100)
        #expect(withEnvironment.source(of: "listen-port") == .environment(variable: "GPUPLANE_LISTEN_PORT"))

        let all = try Configuration(
            keys: keys, file: file, environment: ["GPUPLANE_LISTEN_PORT": "9100"],
            arguments: ["--listen-port", "9200", "run", "--verbose", "--", "--listen-port"])
        #expect(try all.int("listen-port") == 9200)
        #expect(all.source(of: "listen-port") == .commandLine(flag: "--listen-port"))
        #expect(try all.bool("verbose") == true)
        #expect(all.positionalArguments == ["run", "--listen-port"])

        let defaults = try Configuration(keys: keys)
        #expect(try defaults.int("listen-port") == 8080)
        #expect(defaults.source(of: "listen-port") == .defaultValue)
        #expect(try defaults.string("node-name") == nil)
    }

    @Test("typed getters")
    func typedGetters() throws {
        let config = try Configuration(
            keys: keys, file: file, arguments: ["--no-verbose", "--leader-lease=1.5"])
        #expect(try config.list("etcd.endpoints") == ["http://10.0.0.1:2379", "http://10.0.0.2:2379"])
        #expect(try config.duration("leader-lease") == .milliseconds(1500))
        #expect(try config.bool("verbose") == false)
        #expect(try config.string("node-name") == "  padded  ")

        let units = ["250ms": Duration.milliseconds(250), "30": .seconds(30), "30s": .seconds(30), "5m": .seconds(300), "1h": .seconds(3600), "400d": .seconds(400 * 86_400), "1.5d": .seconds(129_600)]
        for (text, expected) in units {
            let parsed = try Configuration(keys: keys, arguments: ["--leader-lease", text])
            #expect(try parsed.duration("leader-lease") == expected, "\(text)")
        }
        let explicitBool = try Configuration(keys: keys, arguments: ["--verbose", "off", "next"])
        #expect(try explicitBool.bool("verbose") == false)
        #expect(explicitBool.positionalArguments == ["next"])
    }

    @Test("a bad int in the file names the key and file:line")
    func badIntInFile() throws {
        let bad = (path: "/etc/gpuplane/scheduler.conf", contents: "# ports\n\nlisten-port = eighty\n")
        let error = try #require(throws: ConfigurationError.self) { try Configuration(keys: keys, file: bad) }
        #expect(error.code == .invalidValue)
        #expect(error.key == "listen-port")
        #expect(error.source == .file(path: "/etc/gpuplane/scheduler.conf", line: 3))
        #expect(
            error.description == #"/etc/gpuplane/scheduler.conf:3: listen-port: expected an integer, got "eighty""#)
    }

    @Test("bad values from the environment and flags name their source")
    func badValuesOtherSources() throws {
        let fromEnvironment = try #require(throws: ConfigurationError.self) {
            try Configuration(keys: keys, environment: ["GPUPLANE_LEADER_LEASE": "soon"])
        }
        #expect(fromEnvironment.code == .invalidValue)
        #expect(fromEnvironment.description.hasPrefix("environment GPUPLANE_LEADER_LEASE: leader-lease: expected a duration"))

        let fromFlag = try #require(throws: ConfigurationError.self) {
            try Configuration(keys: keys, arguments: ["--verbose=maybe"])
        }
        #expect(fromFlag.code == .invalidValue)
        #expect(fromFlag.source == .commandLine(flag: "--verbose"))
    }

    @Test(
        "file errors carry their line",
        arguments: [
            ("listen-port = 1\nlisten-prot = 2", ConfigurationError.Code.unknownKey, 2),
            ("listen-port 1", .malformedLine, 1),
            ("\n = 4", .malformedLine, 2),
            ("verbose = yes\nverbose = no", .duplicateKey, 2),
        ])
    func fileErrors(contents: String, code: ConfigurationError.Code, line: Int) throws {
        let error = try #require(throws: ConfigurationError.self) {
            try Configuration(keys: keys, file: ("/tmp/x.conf", contents))
        }
        #expect(error.code == code)
        #expect(error.source == .file(path: "/tmp/x.conf", line: line))
    }

    @Test("flag errors, required keys and undeclared getters")
    func otherErrors() throws {
        let unknown = try #require(throws: ConfigurationError.self) {
            try Configuration(keys: keys, arguments: ["--listen-prot", "1"])
        }
        #expect(unknown.code == .unknownKey)
        #expect(unknown.description == "command line --listen-prot: listen-prot: unknown flag")

        let missingValue = try #require(throws: ConfigurationError.self) {
            try Configuration(keys: keys, arguments: ["--node-name"])
        }
        #expect(missingValue.code == .missingValue)

        let required = try #require(throws: ConfigurationError.self) {
            try Configuration(keys: [ConfigurationKey("etcd.endpoints", .list, required: true)])
        }
        #expect(required.code == .missingRequiredKey)
        #expect(required.description.contains("GPUPLANE_ETCD_ENDPOINTS"))

        let config = try Configuration(keys: keys)
        let undeclared = try #require(throws: ConfigurationError.self) { try config.int("nope") }
        #expect(undeclared.code == .undeclaredKey)
    }

    @Test("load reads --config, then GPUPLANE_CONFIG, then the default file")
    func loadFromDisk() throws {
        let folder = try TestEnvironment.temporaryDirectory(prefix: "config")
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("agent.conf").path
        try "listen-port = 7000\n".write(toFile: path, atomically: true, encoding: .utf8)

        let flagged = try Configuration.load(keys: keys, arguments: ["--config", path], environment: [:])
        #expect(try flagged.int("listen-port") == 7000)
        #expect(flagged.configFile == path)

        let viaEnvironment = try Configuration.load(
            keys: keys, arguments: [], environment: ["GPUPLANE_CONFIG": path])
        #expect(viaEnvironment.source(of: "listen-port") == .file(path: path, line: 1))

        let missingDefault = try Configuration.load(
            keys: keys, arguments: [], environment: [:], defaultConfigFile: folder.appendingPathComponent("none").path)
        #expect(try missingDefault.int("listen-port") == 8080)
        #expect(missingDefault.configFile == nil)

        let missingNamed = try #require(throws: ConfigurationError.self) {
            try Configuration.load(
                keys: keys, arguments: ["--config=\(folder.path)/none.conf"], environment: [:])
        }
        #expect(missingNamed.code == .unreadableFile)
    }

    @Test("keys spell their environment variable and flag")
    func spellings() {
        let key = ConfigurationKey("etcd.dial-timeout", .duration)
        #expect(key.environmentVariable == "GPUPLANE_ETCD_DIAL_TIMEOUT")
        #expect(key.flag == "--etcd.dial-timeout")
    }
}
