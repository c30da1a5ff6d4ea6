import Foundation
import GPUPlaneCore
import GPUPlaneManifest

func reader(plan: Plan? = nil, maxGPUMemoryGB: Int = 96, gpuLimit: Int = 4) -> ManifestReader {
    // The bundled catalog is part of the product; a missing one is a build error, so force is fine in tests.
    let catalog = try! Catalog.standard()
    return ManifestReader(context: ValidationContext(catalog: catalog, maxGPUMemoryGB: maxGPUMemoryGB, plan: plan, gpuLimit: gpuLimit))
}

func read(_ yaml: String, plan: Plan? = nil, file: String = "app.yaml") -> Manifest {
    reader(plan: plan).read(Data(yaml.utf8), file: file)
}

/// A one-pod application whose pod body is `pod` (indented by the caller as a YAML pod mapping).
func app(pod: String, name: String = "my-app") -> String {
    let body = pod.split(separator: "\n", omittingEmptySubsequences: false).map { "      " + $0 }.joined(separator: "\n")
    return """
        application:
          name: \(name)
          pods:
            - name: api
              image: myorg/app:v1
        \(body)
        """
}

extension Manifest {
    var codes: [DiagnosticCode] { diagnostics.errors.map(\.code) }
    func first(_ code: DiagnosticCode) -> Diagnostic? { diagnostics.first { $0.code == code } }
}

let referenceDir: URL = {
    // Tests/GPUPlaneManifestTests/Support.swift → repository root → ../shared/reference
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
}()
