import Foundation
import GPUPlaneAgent
import GPUPlaneCore
import Testing

@Suite("NVML inventory through dlopen")
struct NVMLInventoryTests {
    @Test func eightFakeH100sMapToDevicesAndTheH100MachineType() throws {
        let host = try FakeNVMLHost()
        let library = try host.open()

        let inventory = GPUInventory.read(from: library)

        #expect(inventory.unavailableReason == nil)
        #expect(inventory.problems.isEmpty)
        #expect(inventory.driverVersion == "550.54.15")
        #expect(inventory.gpus.count == 8)
        #expect(inventory.devices.map(\.index) == Array(0..<8))
        #expect(inventory.devices.map(\.uuid) == host.uuids)
        let third = try #require(inventory.devices.first { $0.index == 3 })
        #expect(third == GPUDevice(
            index: 3, uuid: host.uuids[3], product: "NVIDIA H100 80GB HBM3", memoryMiB: 81559,
            pciBusID: "00000000:1B:00.0"))
        #expect(third.memoryGB == 80)
        #expect(inventory.machineType()?.name == "GPU-H100")

        let reading = inventory.gpus[3]
        #expect(reading.memoryUsedMiB == 3 * 1024)
        #expect(reading.temperatureC == 33)
        #expect(reading.powerMilliwatts == 73_000)
        #expect(reading.utilizationPercent == 30)
        #expect(reading.memoryUtilizationPercent == 3)
        #expect(reading.eccCorrected == 0)
        #expect(reading.eccUncorrected == 0)
        #expect(inventory.health[3] == GPUHealth(
            uuid: host.uuids[3], healthy: true, memoryUsedMiB: 3072, temperatureC: 33, powerW: 73,
            utilizationPercent: 30))
    }

    @Test(arguments: [
        ("NVIDIA A100-SXM4-40GB", 40_960, "GPU-A100"),
        ("NVIDIA A100-SXM4-80GB", 81_920, "GPU-A100-80GB"),
        ("NVIDIA H200", 143_771, "GPU-H200"),
        ("NVIDIA GeForce RTX 4090", 24_564, "GPU-RTX4090"),
    ])
    func productsMapToTheirMachineTypes(product: String, memoryMiB: Int, machineType: String) throws {
        let host = try FakeNVMLHost(gpus: 2, product: product, memoryMiB: memoryMiB)
        let inventory = GPUInventory.read(from: try host.open())
        #expect(inventory.devices.map(\.product) == [product, product])
        #expect(inventory.machineType()?.name == machineType)
    }

    @Test func asyncDiscoveryRunsTheSamePathOffThePool() async throws {
        let host = try FakeNVMLHost(gpus: 4)
        let inventory = await GPUInventory.discover(libraryPath: host.libraryPath)
        #expect(inventory.unavailableReason == nil)
        #expect(inventory.devices.map(\.uuid) == host.uuids)
    }

    @Test func aHostWithoutTheLibraryReportsZeroGPUsWithAReason() async throws {
        let path = "/nonexistent/gpuplane/libnvidia-ml.so.1"
        let inventory = await GPUInventory.discover(libraryPath: path)
        #expect(inventory.gpus.isEmpty)
        #expect(inventory.devices.isEmpty)
        #expect(inventory.machineType() == nil)
        let reason = try #require(inventory.unavailableReason)
        #expect(reason.contains(path))

        let error = #expect(throws: NVMLError.self) { try NVMLLibrary(path: path) }
        #expect(error?.code == .libraryNotLoaded)
    }

    @Test func aLibraryThatIsNotNVMLIsRefusedByItsMissingSymbols() throws {
        let error = #expect(throws: NVMLError.self) { try NVMLLibrary(path: "libm.so.6") }
        #expect(error?.code == .symbolNotFound)
        #expect(GPUInventory.discover(libraryPath: "libm.so.6").unavailableReason != nil)
    }

    @Test func aDriverThatFailsToInitialiseReportsZeroGPUsWithAReason() throws {
        let host = try FakeNVMLHost(missingConfig: true)
        let error = #expect(throws: NVMLError.self) { try host.open() }
        #expect(error?.code == .callFailed)
        #expect(error?.result == .driverNotLoaded)

        let inventory = GPUInventory.discover(libraryPath: host.libraryPath)
        #expect(inventory.gpus.isEmpty)
        #expect(inventory.unavailableReason != nil)
    }

    @Test func gpusWithoutECCReportNoCountersAndOtherGPUsStillRead() throws {
        let host = try FakeNVMLHost(gpuLines: [
            "gpu uuid=GPU-aaaa name=\"NVIDIA L40\" memory_mib=46068 ecc=0",
            "gpu uuid=GPU-bbbb name=\"NVIDIA L40\" memory_mib=46068",
        ])
        let library = try host.open()
        let inventory = GPUInventory.read(from: library)
        #expect(inventory.gpus.map(\.uuid) == ["GPU-aaaa", "GPU-bbbb"])
        #expect(inventory.gpus[0].eccUncorrected == nil)
        #expect(inventory.gpus[1].eccUncorrected == 0)
        #expect(inventory.machineType()?.name == "GPU-L40")

        let error = #expect(throws: NVMLError.self) { try library.device(at: 0).eccErrors() }
        #expect(error?.result == .notSupported)
    }

    @Test func aLostGPUIsReportedAsAProblemNotACrash() throws {
        let host = try FakeNVMLHost(gpus: 3)
        let library = try host.open()
        try host.inject("lost 1")
        let inventory = GPUInventory.read(from: library)
        #expect(inventory.gpus.map(\.index) == [0, 2])
        #expect(inventory.problems.count == 1)
        let error = #expect(throws: NVMLError.self) { try library.device(at: 1) }
        #expect(error?.isGPULost == true)
    }
}
