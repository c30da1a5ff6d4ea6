import Testing
@testable import GPUPlaneCore

@Suite struct MachineTypeTests {
    let table = MachineTypeTable.standard

    /// Every row of reference/machine-types.txt, exactly.
    @Test(arguments: [
        ("GPU-RTX4090", 24, 48, 12_000, 1000, 2 as Int?, 2 as Int?),
        ("GPU-RTX5090", 32, 60, 14_000, 1800, 3, 3),
        ("GPU-A100", 40, 60, 12_000, 2000, nil, 5),
        ("GPU-L40", 48, 100, 6_000, 900, 3, 3),
        ("GPU-H100", 80, 112, 12_000, 3400, nil, 7),
        ("GPU-H200", 141, 112, 12_000, 4800, nil, 7),
        ("GPU-B200", 192, 210, 19_000, 8000, nil, 7),
    ])
    func gpuTypesMatchTheReference(
        name: String, vram: Int, ramGB: Int, cpuMilli: Int, bandwidth: Int, enc: Int?, dec: Int?
    ) throws {
        let type = try #require(table.named(name))
        #expect(type.family == .gpu)
        #expect(type.vramGB == vram)
        #expect(type.ramMB == ramGB * 1024)
        #expect(type.cpuMilli == cpuMilli)
        #expect(type.bandwidthGBps == bandwidth)
        #expect(type.videoEncoders == enc)
        #expect(type.videoDecoders == dec)
    }

    @Test(arguments: [("XS", 512, 500), ("S", 1024, 1000), ("M", 2048, 2000), ("L", 15 * 1024, 4000), ("XL", 30 * 1024, 8000)])
    func cpuTypesMatchTheReference(name: String, ramMB: Int, cpuMilli: Int) throws {
        let type = try #require(table.named(name))
        #expect(type.family == .cpu)
        #expect(type.ramMB == ramMB)
        #expect(type.cpuMilli == cpuMilli)
        #expect(type.vramGB == 0)
    }

    @Test func av1OnlyWhereTheTableSaysSo() {
        #expect(table.gpuTypes.filter(\.av1).map(\.name).sorted() == ["GPU-L40", "GPU-RTX5090", "GPU-RTXPRO6000"])
    }

    @Test func smallestGPUThatFits() {
        // "pick the smallest GPU that fits your model"
        #expect(table.smallestGPU(fitting: 20)?.name == "GPU-RTX4090")
        #expect(table.smallestGPU(fitting: 24)?.name == "GPU-RTX4090")
        #expect(table.smallestGPU(fitting: 25)?.name == "GPU-RTX5090")
        #expect(table.smallestGPU(fitting: 41)?.name == "GPU-L40")
        #expect(table.smallestGPU(fitting: 96)?.name == "GPU-RTXPRO6000")
        #expect(table.smallestGPU(fitting: 150)?.name == "GPU-B200")
        #expect(table.smallestGPU(fitting: 200) == nil)
    }

    @Test func orderedPoolPicksTheSmallestAmongTheNamed() {
        #expect(table.smallestGPU(fitting: 20, among: ["GPU-H100", "GPU-L40"])?.name == "GPU-L40")
        #expect(table.smallestGPU(fitting: 60, among: ["GPU-L40"]) == nil)
    }

    @Test func aliasesFromTheDeploymentsDocument() {
        #expect(table.named("A100-80GB")?.vramGB == 80)
        #expect(table.named("H100-80GB")?.name == "GPU-H100")
        #expect(table.named("gpu-h100")?.name == "GPU-H100")
    }

    @Test func nvmlProductNamesMapToTypes() {
        #expect(table.matching(product: "NVIDIA H100 80GB HBM3", memoryMiB: 81_559)?.name == "GPU-H100")
        #expect(table.matching(product: "NVIDIA A100-SXM4-80GB", memoryMiB: 81_920)?.name == "GPU-A100-80GB")
        #expect(table.matching(product: "NVIDIA A100-SXM4-40GB", memoryMiB: 40_960)?.name == "GPU-A100")
        #expect(table.matching(product: "NVIDIA GeForce RTX 4090", memoryMiB: 24_564)?.name == "GPU-RTX4090")
        #expect(table.matching(product: "NVIDIA RTX PRO 6000 Blackwell", memoryMiB: 97_887)?.name == "GPU-RTXPRO6000")
        #expect(table.matching(product: "Tesla T4", memoryMiB: 15_360) == nil)
    }
}

@Suite struct CatalogAndPlanTests {
    let catalog = try! Catalog.standard()

    @Test(arguments: ["llama-3.1-8b", "qwen-2.5-coder-7b", "phi-3.5-mini", "nomic-embed"])
    func referenceMode3Slugs(slug: String) throws {
        let model = try #require(catalog.model(slug))
        #expect(model.mode == .sharedPinned)
        #expect(model.vramGB <= 48)
    }

    @Test(arguments: ["llama-3.3-70b", "deepseek-r1-distill-llama-70b-fp8", "qwen-2.5-coder-32b-fp8"])
    func referenceMode2Slugs(slug: String) throws {
        #expect(try #require(catalog.model(slug)).mode == .largePinned)
    }

    /// "scheduler picks a small shared model": the smallest small chat model, never the
    /// embedding one (nomic-embed is smaller, but a Free pod calls chat completions).
    @Test func autoPicksTheSmallestSmallSharedChatModel() throws {
        let auto = try #require(catalog.autoModel)
        #expect(auto.mode == .sharedPinned)
        #expect(auto.size == .small)
        #expect(auto.task == .chat)
        #expect(auto.slug == "phi-3.5-mini")
        #expect(catalog.model("nomic-embed")?.task == .embedding)
        #expect(auto.vramGB == catalog.models.filter { $0.mode == .sharedPinned && $0.task == .chat }.map(\.vramGB).min())
    }

    /// A catalog file that names no task: embeddings when the arguments ask for them.
    @Test func anOperatorsEmbeddingModelIsNeverAuto() throws {
        let json = #"{"models": [{"slug": "tiny-embed", "mode": 3, "size": "small", "vramGB": 1, "image": "ops/vllm:1", "args": ["--model", "x/e", "--task", "embed"]}, {"slug": "tiny-chat", "mode": 3, "size": "small", "vramGB": 3, "image": "ops/vllm:1", "args": ["--task=generate"]}, {"slug": "tagged", "mode": 3, "size": "small", "vramGB": 2, "image": "ops/vllm:1", "task": "embedding"}]}"#
        let merged = try catalog.overridden(by: try Catalog(json: Data(json.utf8)))
        #expect(merged.model("tiny-embed")?.task == .embedding)
        #expect(merged.model("tagged")?.task == .embedding)
        #expect(merged.model("tiny-chat")?.task == .chat)
        #expect(merged.autoModel?.slug == "tiny-chat")
    }

    @Test func autoIsTheFreePlansOnly() {
        #expect(Plan.allCases.filter(\.allowsAuto) == [.free])
    }

    @Test func operatorOverridesReplaceAndAdd() throws {
        let json = #"{"models": [{"slug": "llama-3.1-8b", "mode": 3, "size": "small", "vramGB": 22, "image": "ops/vllm:1"}, {"slug": "mistral-7b", "mode": 3, "size": "small", "vramGB": 16, "image": "ops/vllm:1"}]}"#
        let merged = try catalog.overridden(by: try Catalog(json: Data(json.utf8)))
        #expect(merged.model("llama-3.1-8b")?.vramGB == 22)
        #expect(merged.model("llama-3.1-8b")?.image == "ops/vllm:1")
        #expect(merged.model("mistral-7b") != nil)
        #expect(merged.models.count == catalog.models.count + 1)
    }

    @Test func catalogRejectsNonsense() {
        #expect(throws: CatalogError.self) {
            try Catalog(json: Data(#"{"models": [{"slug": "big", "mode": 3, "size": "mid", "vramGB": 60, "image": "x"}]}"#.utf8))
        }
        #expect(throws: CatalogError.self) {
            try Catalog(json: Data(#"{"models": [{"slug": "raw", "mode": 1, "size": "large", "vramGB": 96, "image": "x"}]}"#.utf8))
        }
        #expect(throws: CatalogError.self) { try Catalog(json: Data("not json".utf8)) }
    }

    /// The plan access matrix.
    @Test func planMatrix() throws {
        let small = try #require(catalog.model("llama-3.1-8b"))
        let mid = try #require(catalog.model("qwen-2.5-14b"))
        let large = try #require(catalog.model("llama-3.3-70b"))
        #expect(!Plan.free.allows(small))
        #expect(Plan.pro.allows(small) && !Plan.pro.allows(mid) && !Plan.pro.allows(large))
        #expect(Plan.scale.allows(small) && Plan.scale.allows(mid) && Plan.scale.allows(large))
        #expect(Plan.enterprise.allows(large))
        #expect(Plan.allCases.filter(\.allowsCustom) == [.enterprise])
        #expect(Plan.lowest(allowing: small) == .pro)
        #expect(Plan.lowest(allowing: large) == .scale)
    }

    @Test func includedHoursAndPrices() {
        #expect(Plan.free.includedHours(.sharedPinned) == 10)
        #expect(Plan.pro.includedHours(.sharedPinned) == 60)
        #expect(Plan.pro.includedHours(.largePinned) == 0)
        #expect(Plan.scale.includedHours(.largePinned) == 240)
        #expect(Plan.scale.includedHours(.sharedPinned) == 600)
        #expect(Plan.enterprise.includedHours(.dedicated) == 0)
        #expect(Plan.allCases.map(\.monthlyPriceCents) == [0, 2_900, 29_900, 299_900])
    }
}

import Foundation

@Suite struct PricingTests {
    let pricing = Pricing.standard

    @Test func hourlyRatesAtCoefficientOne() {
        #expect(pricing.cost(mode: .sharedPinned, priority: .inference, seconds: 3600) == 500_000)
        #expect(pricing.cost(mode: .largePinned, priority: .inference, seconds: 3600) == 1_250_000)
        #expect(pricing.cost(mode: .dedicated, priority: .training, seconds: 3600) == 2_500_000)
    }

    @Test func fiveMinuteIntervals() {
        // $0.50/h for 5 minutes = $0.041667 = 41.667 credits.
        let cost = pricing.cost(mode: .sharedPinned, priority: .inference, seconds: Pricing.defaultIntervalSeconds)
        #expect(cost == 41_667)
        #expect(abs(Pricing.credits(microDollars: cost) - 41.667) < 0.001)
        // Twelve intervals of Mode 2 make an hour, within rounding.
        let hour = (0..<12).map { _ in pricing.cost(mode: .largePinned, priority: .batch, seconds: 300) }.reduce(0, +)
        #expect(abs(hour - 1_250_000) <= 12)
    }

    @Test func dedicatedIsPerGPU() {
        #expect(pricing.cost(mode: .dedicated, priority: .training, seconds: 3600, gpus: 4) == 10_000_000)
        // Shared attachments are one unit whatever is passed.
        #expect(pricing.cost(mode: .sharedPinned, priority: .training, seconds: 3600, gpus: 4) == 500_000)
    }

    @Test func creditsPerDollar() {
        #expect(Pricing.credits(microDollars: 1_000_000) == 1_000)
    }

    @Test func includedHoursFirst() {
        // 10 free hours, 9h59m used: one minute of the next interval is included.
        let split = Pricing.split(seconds: 300, usedThisMonth: 10 * 3600 - 60, includedHours: 10)
        #expect(split.included == 60 && split.billable == 240)
        #expect(Pricing.split(seconds: 300, usedThisMonth: 0, includedHours: 10) == (300, 0))
        #expect(Pricing.split(seconds: 300, usedThisMonth: 99_999, includedHours: 10) == (0, 300))
    }

    @Test func coefficientsScale() {
        var custom = Pricing.standard
        custom.coefficients[.batch] = 0.5
        #expect(custom.cost(mode: .sharedPinned, priority: .batch, seconds: 3600) == 250_000)
    }
}
