import Foundation
import GPUPlaneAgent
import GPUPlaneTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// Thrown when the fake library cannot be prepared.
struct FakeNVMLSetupError: Error, CustomStringConvertible {
    let description: String
}

/// A private copy of libFakeNVML.so with its own config and events files.
///
/// The dynamic loader keeps one instance per file, so each host gets its own copy of the
/// library and therefore its own GPUs and events: tests run in parallel without sharing the
/// fake's process-wide state or environment variables. The copy is configured through its
/// `fakeNVMLConfigure` export and then loaded by the production code path,
/// `NVMLLibrary(path:)`.
final class FakeNVMLHost: @unchecked Sendable {
    let directory: URL
    let libraryPath: String
    let configURL: URL
    let eventsURL: URL
    let uuids: [String]
    private let handle: UnsafeMutableRawPointer

    /// The library `swift build` produced next to the test executable.
    static func builtLibrary() throws -> URL {
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var directory = executable.deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent("libFakeNVML.so")
            if FileManager.default.fileExists(atPath: candidate.path) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        throw FakeNVMLSetupError(
            description: "libFakeNVML.so not found near \(executable.path); run `swift build --product FakeNVML`")
    }

    /// Eight H100s by default; `gpuLines` replaces the generated `gpu` lines when given.
    init(
        gpus count: Int = 8, product: String = "NVIDIA H100 80GB HBM3", memoryMiB: Int = 81559,
        gpuLines: [String]? = nil, missingConfig: Bool = false
    ) throws {
        directory = try TestEnvironment.temporaryDirectory(prefix: "fakenvml")
        let copy = directory.appendingPathComponent("libFakeNVML-copy.so")
        try FileManager.default.copyItem(at: try Self.builtLibrary(), to: copy)
        libraryPath = copy.path
        configURL = directory.appendingPathComponent("gpus.conf")
        eventsURL = directory.appendingPathComponent("events")

        let uuids = (0..<count).map { index in
            "GPU-\(UUID().uuidString.lowercased().dropLast(2))\(String(format: "%02x", index))"
        }
        self.uuids = gpuLines == nil ? uuids : []
        let lines = gpuLines ?? uuids.enumerated().map { index, uuid in
            "gpu index=\(index) uuid=\(uuid) name=\"\(product)\" memory_mib=\(memoryMiB) "
                + "memory_used_mib=\(index * 1024) temp=\(30 + index) power_mw=\(70_000 + index * 1_000) "
                + "util=\(index * 10) mem_util=\(index) pci=0000:\(String(format: "%02x", 0x18 + index)):00.0"
        }
        let config = ["# written by FakeNVMLHost", "driver 550.54.15"] + lines
        if !missingConfig {
            try (config.joined(separator: "\n") + "\n").write(to: configURL, atomically: true, encoding: .utf8)
        }
        try Data().write(to: eventsURL)

        guard let handle = dlopen(libraryPath, RTLD_NOW | RTLD_LOCAL) else {
            throw FakeNVMLSetupError(description: "dlopen \(libraryPath) failed")
        }
        self.handle = handle
        typealias Configure = @convention(c) (UnsafePointer<CChar>?, UnsafePointer<CChar>?) -> UInt32
        guard let symbol = dlsym(handle, "fakeNVMLConfigure") else {
            dlclose(handle)
            throw FakeNVMLSetupError(description: "fakeNVMLConfigure is not exported")
        }
        let configure = unsafeBitCast(symbol, to: Configure.self)
        guard configure(configURL.path, eventsURL.path) == 0 else {
            dlclose(handle)
            throw FakeNVMLSetupError(description: "fakeNVMLConfigure failed")
        }
    }

    deinit {
        dlclose(handle)
        try? FileManager.default.removeItem(at: directory)
    }

    /// Loads the copy through the production path.
    func open() throws -> NVMLLibrary { try NVMLLibrary(path: libraryPath) }

    /// Appends one event line (see FakeNVML.h) in a single write.
    func inject(_ line: String) throws {
        let file = try FileHandle(forWritingTo: eventsURL)
        defer { try? file.close() }
        try file.seekToEnd()
        try file.write(contentsOf: Data((line + "\n").utf8))
    }
}

/// A thread-safe list of values a background task collects.
final class Collected<Value: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [Value] = []
    func append(_ value: Value) { lock.withLock { values.append(value) } }
    var all: [Value] { lock.withLock { values } }
}
