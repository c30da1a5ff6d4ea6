import Foundation

/// The fake NVML's two files for one node-agent (`libFakeNVML.so` reads them): its GPUs, each an
/// NVIDIA H100 80GB HBM3 at 35 °C and 70 W on PCI bus `0000:<0x18 + index>:00.0` under driver
/// 550.54.15, and an empty event file a test appends XID events to.
public struct FakeNVMLFiles: Sendable {
    /// The GPU list (`GPUPLANE_FAKE_NVML_CONFIG`).
    public let config: URL
    /// The event file (`GPUPLANE_FAKE_NVML_EVENTS`).
    public let events: URL

    /// The agent's environment naming both files.
    public var environment: [String: String] {
        ["GPUPLANE_FAKE_NVML_CONFIG": config.path, "GPUPLANE_FAKE_NVML_EVENTS": events.path]
    }

    /// Writes `<name>.fake-nvml.conf` listing `gpus` and an empty `<name>.fake-nvml.events` into
    /// `directory`.
    public static func write(gpus: [PodmanFixture.FakeGPU], in directory: URL, name: String) throws -> FakeNVMLFiles {
        let files = FakeNVMLFiles(
            config: directory.appendingPathComponent("\(name).fake-nvml.conf"),
            events: directory.appendingPathComponent("\(name).fake-nvml.events"))
        let lines = ["driver 550.54.15"] + gpus.map {
            "gpu index=\($0.index) uuid=\($0.uuid) name=\"NVIDIA H100 80GB HBM3\" memory_mib=81559 temp=35 power_mw=70000 pci=0000:\(String(format: "%02x", 0x18 + $0.index)):00.0"
        }
        try (lines.joined(separator: "\n") + "\n").write(to: files.config, atomically: true, encoding: .utf8)
        guard FileManager.default.createFile(atPath: files.events.path, contents: nil) else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: files.events.path])
        }
        return files
    }
}
