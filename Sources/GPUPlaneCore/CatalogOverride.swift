#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// An operator's `catalog-file`: entries by slug. An entry whose slug the catalog has changes
/// only the fields it names (`{"slug": "llama-3.1-8b", "image": "registry.local/vllm:0.34.0"}`
/// swaps the image and keeps the rest); one with a new slug is a whole new model and must name
/// everything a model needs (mode, size, vramGB, and an image unless vLLM's).
struct CatalogOverrideFile: Decodable {
    /// One entry: what it names, and the whole model when it is one.
    struct Entry: Decodable {
        var slug: String
        var mode: GPUMode?
        var size: CatalogModel.SizeClass?
        var vramGB: Int?
        var engine: EngineKind?
        var image: String?
        var weights: String?
        var weightsFile: String?
        var maxModelLen: Int?
        var maxBatchSize: Int?
        var args: [String]?
        var port: Int?
        var useCase: String?
        var task: CatalogModel.ModelTask?
        /// The entry read as a whole model; nil when it lacks a required field.
        var whole: CatalogModel?
        /// Why it is not a whole model.
        var wholeError: String?

        private enum Keys: String, CodingKey {
            case slug, mode, size, vramGB, engine, image, weights, weightsFile, maxModelLen, maxBatchSize, args, port, useCase, task
        }

        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: Keys.self)
            slug = try c.decode(String.self, forKey: .slug)
            mode = try c.decodeIfPresent(GPUMode.self, forKey: .mode)
            size = try c.decodeIfPresent(CatalogModel.SizeClass.self, forKey: .size)
            vramGB = try c.decodeIfPresent(Int.self, forKey: .vramGB)
            engine = try c.decodeIfPresent(EngineKind.self, forKey: .engine)
            image = try c.decodeIfPresent(String.self, forKey: .image)
            weights = try c.decodeIfPresent(String.self, forKey: .weights)
            weightsFile = try c.decodeIfPresent(String.self, forKey: .weightsFile)
            maxModelLen = try c.decodeIfPresent(Int.self, forKey: .maxModelLen)
            maxBatchSize = try c.decodeIfPresent(Int.self, forKey: .maxBatchSize)
            args = try c.decodeIfPresent([String].self, forKey: .args)
            port = try c.decodeIfPresent(Int.self, forKey: .port)
            useCase = try c.decodeIfPresent(String.self, forKey: .useCase)
            task = try c.decodeIfPresent(CatalogModel.ModelTask.self, forKey: .task)
            do {
                whole = try CatalogModel(from: decoder)
            } catch {
                wholeError = "\(error)"
            }
        }

        /// `base` with the fields this entry names replaced.
        func applied(to base: CatalogModel) -> CatalogModel {
            var model = base
            if let mode { model.mode = mode }
            if let size { model.size = size }
            if let vramGB { model.vramGB = vramGB }
            if let engine {
                model.engine = engine
                // Another engine without an image of its own cannot keep vLLM's.
                if image == nil, engine != base.engine, base.image == VLLM.image { model.image = "" }
            }
            if let image { model.image = image }
            if let args {
                (model.weights, model.args) = CatalogModel.weights(weights ?? "", args: args)
                if model.weights.isEmpty { model.weights = base.weights }
                if task == nil { model.task = .inferred(fromArgs: args) }
            } else if let weights {
                model.weights = weights
            }
            if let weightsFile { model.weightsFile = weightsFile }
            if let maxModelLen { model.maxModelLen = maxModelLen }
            if let maxBatchSize { model.maxBatchSize = maxBatchSize }
            if let port { model.port = port }
            if let useCase { model.useCase = useCase }
            if let task { model.task = task }
            return model
        }
    }

    var models: [Entry]
}

extension Catalog {
    /// This catalog with an operator's `catalog-file` (its JSON) applied: entries of known slugs
    /// change the fields they name, entries of new slugs add whole models.
    public func overridden(byFile json: Data) throws -> Catalog {
        let file: CatalogOverrideFile
        do {
            file = try JSONDecoder().decode(CatalogOverrideFile.self, from: json)
        } catch {
            throw CatalogError(message: "catalog: \(error)")
        }
        var models = Dictionary(uniqueKeysWithValues: self.models.map { ($0.slug, $0) })
        var seen = Set<String>()
        for entry in file.models {
            guard seen.insert(entry.slug).inserted else {
                throw CatalogError(message: "catalog: slug '\(entry.slug)' appears twice")
            }
            if let base = models[entry.slug] {
                let model = entry.applied(to: base)
                guard !model.image.isEmpty else {
                    throw CatalogError(
                        message: "catalog: '\(entry.slug)' is served by \(model.engine.rawValue), which has no default image; name its image")
                }
                models[entry.slug] = model
            } else if let whole = entry.whole {
                models[entry.slug] = whole
            } else {
                throw CatalogError(
                    message: "catalog: '\(entry.slug)' is not in the catalog, so its entry must be a whole model (slug, mode, size, vramGB, weights, and image unless vLLM's): \(entry.wholeError ?? "")")
            }
        }
        return try Catalog(models: Array(models.values))
    }
}
