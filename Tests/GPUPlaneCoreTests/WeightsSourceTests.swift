import Foundation
@testable import GPUPlaneCore
import Testing

/// Weights sources as a catalog's `weights` and a deployment's `hf.repo` name them, and the
/// errors that say what to write instead.
@Suite struct WeightsSourceTests {
    @Test func parsesEachKind() throws {
        #expect(try WeightsSource.parse("meta-llama/Llama-3.1-8B-Instruct") == .huggingFace(repo: "meta-llama/Llama-3.1-8B-Instruct", revision: "main"))
        #expect(try WeightsSource.parse("org/m", revision: "v1.0") == .huggingFace(repo: "org/m", revision: "v1.0"))
        #expect(try WeightsSource.parse("hf://org/m@refs/pr/1") == .huggingFace(repo: "org/m", revision: "refs/pr/1"))
        let oci = try WeightsSource.parse("oci://127.0.0.1:5000/gpuplane/tiny-random-llama:v1")
        #expect(oci == .oci(.init(registry: "127.0.0.1:5000", repository: "gpuplane/tiny-random-llama", tag: "v1", digest: nil)))
        let digest = "sha256:" + String(repeating: "ab", count: 32)
        let pinned = try WeightsSource.parse("oci://registry.example.com/team/w@\(digest)")
        #expect(pinned == .oci(.init(registry: "registry.example.com", repository: "team/w", tag: nil, digest: digest)))
        #expect(try WeightsSource.parse("/srv/models/llama") == .hostPath("/srv/models/llama"))
        #expect(try WeightsSource.parse("file:///srv/models//llama/") == .hostPath("/srv/models/llama"))
        // The canonical text reads back to the same source.
        for text in ["org/m", "oci://127.0.0.1:5000/a/b:v1", "oci://r.io/a@\(digest)", "/srv/x", "hf://org/m@dev"] {
            let source = try WeightsSource.parse(text)
            #expect(try WeightsSource.parse(source.description) == source, "\(text)")
        }
        #expect(try WeightsSource.parse("/srv/x").isFetched == false)
        #expect(oci.isFetched)
    }

    @Test func refusesWithTheFix() {
        func message(_ text: String, revision: String? = nil) -> String {
            do {
                _ = try WeightsSource.parse(text, revision: revision)
                return ""
            } catch {
                return error.message
            }
        }
        #expect(message("").contains("no weights named"))
        #expect(message("oci://127.0.0.1:5000/a/b").contains("names no tag or digest"))
        #expect(message("oci://127.0.0.1:5000").contains("names no repository"))
        #expect(message("oci://r.io/Team/w:v1").contains("lowercase"))
        #expect(message("oci://r.io/a@sha256:xyz").contains("64 lowercase hex"))
        #expect(message("s3://bucket/key").contains("scheme"))
        #expect(message("llama").contains("is not a Hugging Face repository"))
        #expect(message("/srv/../etc").contains("'..'"))
        #expect(message("file://relative/x").contains("absolute path"))
        #expect(message("org/m", revision: "../x").contains("revision"))
        #expect(message("org/m x").contains("spaces"))
    }

    @Test func weightsFileIsARelativeName() {
        #expect(WeightsSource.isRelativeFile("tiny-random-llama.gguf"))
        #expect(WeightsSource.isRelativeFile("sub/model.safetensors"))
        #expect(!WeightsSource.isRelativeFile("/etc/passwd"))
        #expect(!WeightsSource.isRelativeFile("../x"))
        #expect(!WeightsSource.isRelativeFile("a//b"))
        #expect(!WeightsSource.isRelativeFile(""))
    }

    /// The catalog entry the local cluster serves on CPU: its weights are an OCI artifact, the
    /// engine loads the GGUF file from the node-agent's read-only mount.
    @Test func aLlamaCppEntryWithOCIWeightsServesTheMount() throws {
        let json = """
            {"models": [{"slug": "tiny-llama", "mode": 3, "size": "small", "vramGB": 1, "engine": "llama-cpp",
              "image": "localhost/gpuplane/llama-cpp:dev", "weights": "oci://127.0.0.1:5000/gpuplane/tiny-random-llama:v1",
              "weightsFile": "tiny-random-llama.gguf"}]}
            """
        let catalog = try Catalog(json: Data(json.utf8))
        let model = try #require(catalog.model("tiny-llama"))
        #expect(model.weightsFile == "tiny-random-llama.gguf")
        let weights = try #require(model.servingWeights)
        #expect(weights.source == "oci://127.0.0.1:5000/gpuplane/tiny-random-llama:v1")
        #expect(weights.enginePath == "/weights/tiny-random-llama.gguf")
        let serving = ModelServer.Serving(model, shape: ServingShape(gpus: 0))
        #expect(serving.weights == weights)
        let args = serving.args
        let at = try #require(args.firstIndex(of: "--model"))
        #expect(args[at + 1] == "/weights/tiny-random-llama.gguf")
        // Round trip through JSON (etcd, the API) keeps the weights.
        let decoded = try JSONDecoder().decode(ModelServer.Serving.self, from: JSONEncoder().encode(serving))
        #expect(decoded == serving)
        // A Hugging Face id stays the engine's own fetch: nothing mounted, --model is the id.
        let phi = try #require(try Catalog.standard().model("phi-3.5-mini"))
        #expect(phi.servingWeights == nil)
        #expect(ModelServer.Serving(phi).weights == nil)
        // Written hf://, the node-agent fetches it (once per node) and vLLM gets the mount.
        let fetched = try Catalog.standard().overridden(byFile: Data(#"{"models": [{"slug": "phi-3.5-mini", "weights": "hf://microsoft/Phi-3.5-mini-instruct@main"}]}"#.utf8))
        let agentPhi = try #require(fetched.model("phi-3.5-mini"))
        #expect(agentPhi.servingWeights == ServingWeights(source: "hf://microsoft/Phi-3.5-mini-instruct@main"))
        let phiArgs = ModelServer.Serving(agentPhi).args
        #expect(phiArgs[try #require(phiArgs.firstIndex(of: "--model")) + 1] == "/weights")
    }

    @Test func catalogRefusesBadWeightsNamingTheField() {
        func refusal(_ entry: String) -> String {
            let json = #"{"models": [{"slug": "m", "mode": 3, "size": "small", "vramGB": 1, "image": "img", \#(entry)}]}"#
            do {
                _ = try Catalog(json: Data(json.utf8))
                return ""
            } catch {
                return "\(error)"
            }
        }
        #expect(refusal(#""weights": "oci://r.io/a""#).contains("'m': weights: "))
        #expect(refusal(#""engine": "llama-cpp", "weights": "oci://r.io/a:v1""#).contains("'m': weightsFile: a llama-cpp model loads one GGUF file"))
        #expect(refusal(#""engine": "llama-cpp", "weights": "oci://r.io/a:v1", "weightsFile": "../x.gguf""#).contains("'m': weightsFile: '../x.gguf'"))
        #expect(refusal(#""engine": "llama-cpp""#).contains("'m': weights: a llama-cpp model must name its weights"))
        #expect(refusal(#""engine": "llama-cpp", "weights": "/srv/m.gguf""#) == "")
    }

    @Test func progressText() {
        #expect(LoadingStatus.progressText(done: 3_200_000_000, total: 16_100_000_000) == "3.2/16.1 GB")
        #expect(LoadingStatus.progressText(done: 1_500_000, total: 20_000_000) == "1.5/20.0 MB")
        #expect(LoadingStatus.progressText(done: 512, total: nil) == "0.5 kB")
    }
}
