import ArgumentParser
import Foundation
import GPUPlaneCLI
import GPUPlaneCore
import Testing

@Suite struct ValidateCommandTests {
    let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    func context(_ plan: Plan? = nil) throws -> ValidationContext {
        ValidationContext(catalog: try Catalog.standard(), plan: plan)
    }

    /// Every shipped example is valid for the plan it is written for.
    @Test(arguments: [
        ("chat-backend.yaml", Plan.scale), ("custom-trainer.yaml", .enterprise),
        ("free-auto.yaml", .free), ("deployment.yaml", .pro),
    ])
    func examplesValidate(file: String, plan: Plan) throws {
        let url = repository.appendingPathComponent("examples").appendingPathComponent(file)
        let report = ValidateCommand.report(data: try Data(contentsOf: url), file: file, context: try context(plan))
        #expect(report.valid, "\(report.lines)")
        #expect(report.lines.last?.hasPrefix("\(file): valid: ") == true)
    }

    @Test func errorsPrintCompilerStyle() throws {
        let yaml = "application:\n  name: app\n  pods:\n    - name: api\n      image: x\n      gpu:\n        model: llama-3.1-8b\n"
        let report = ValidateCommand.report(data: Data(yaml.utf8), file: "app.yaml", context: try context())
        #expect(!report.valid)
        #expect(report.lines == [
            "app.yaml:7:9: error: application.pods[0].gpu.enabled: gpu.enabled: true is required when the gpu block is present; write gpu: {enabled: true, model: llama-3.1-8b}, or omit the block to run without a GPU",
            "1 error",
        ])
    }

    @Test func planFlagChecksEntitlement() throws {
        let command = try #require(try GPUPlaneCommand.parseAsRoot([
            "validate", "-f", repository.appendingPathComponent("examples/chat-backend.yaml").path, "--plan", "pro",
        ]) as? ValidateCommand)
        #expect(command.options.plan == .pro)
        #expect(throws: ExitCode(1)) { try command.run() }
        #expect(throws: (any Error).self) { try GPUPlaneCommand.parseAsRoot(["validate", "-f", "x", "--plan", "gold"]) }
    }

    @Test func missingFileIsAClearError() throws {
        let command = try #require(try GPUPlaneCommand.parseAsRoot(["validate", "-f", "/nonexistent.yaml"]) as? ValidateCommand)
        #expect(throws: ValidationError.self) { try command.run() }
    }

    @Test func modelsTableListsEveryPlanColumn() throws {
        let rows = ModelsCommand.table(try Catalog.standard())
        #expect(rows[0].hasPrefix("SLUG"))
        let llama70 = try #require(rows.first { $0.hasPrefix("llama-3.3-70b ") })
        #expect(llama70.contains("scale,enterprise"))
        // `auto` is the Free plan's alone, and picks a chat model (never the embedding one).
        let auto = try #require(rows.first { $0.hasPrefix("auto ") })
        #expect(auto.contains(" free ") && !auto.contains("pro"), "\(auto)")
        #expect(auto.contains("(phi-3.5-mini)"), "\(auto)")
    }
}
