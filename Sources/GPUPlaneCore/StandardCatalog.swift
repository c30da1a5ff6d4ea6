/// The catalog gpuplane ships, in the JSON shape of an operator's `catalog-file` override. Kept
/// in source rather than as a bundle resource: resource bundles need Foundation's `Bundle`,
/// which the node-agent does not link.
///
/// Every model is served by vLLM (`engine` defaults to `vllm`, `image` to ``VLLM/image``), its
/// weights fetched from Hugging Face by the repo id in `weights`; the command line is written by
/// ``ServingCommand/arguments(for:shape:weightsPath:)`` and checked against vLLM's own argument
/// definitions by `VLLMArgumentTests`.
enum StandardCatalog {
    static let json = #"""
        {
          "models": [
            {"slug": "phi-3.5-mini", "mode": 3, "size": "small", "vramGB": 10,
             "weights": "microsoft/Phi-3.5-mini-instruct", "maxModelLen": 8192, "maxBatchSize": 32,
             "port": 8000, "useCase": "small chat and routing, lowest latency"},
            {"slug": "llama-3.1-8b", "mode": 3, "size": "small", "vramGB": 20,
             "weights": "meta-llama/Llama-3.1-8B-Instruct", "maxModelLen": 16384, "maxBatchSize": 32,
             "port": 8000, "useCase": "general chat and tool use"},
            {"slug": "qwen-2.5-coder-7b", "mode": 3, "size": "small", "vramGB": 18,
             "weights": "Qwen/Qwen2.5-Coder-7B-Instruct", "maxModelLen": 16384, "maxBatchSize": 32,
             "port": 8000, "useCase": "code completion and review"},
            {"slug": "nomic-embed", "mode": 3, "size": "small", "vramGB": 2,
             "weights": "nomic-ai/nomic-embed-text-v1.5", "maxBatchSize": 64, "args": ["--runner", "pooling", "--trust-remote-code"],
             "port": 8000, "useCase": "text embeddings for search and RAG", "task": "embedding"},
            {"slug": "qwen-2.5-14b", "mode": 3, "size": "mid", "vramGB": 36,
             "weights": "Qwen/Qwen2.5-14B-Instruct", "maxModelLen": 16384, "maxBatchSize": 32,
             "port": 8000, "useCase": "stronger reasoning that still shares a GPU"},
            {"slug": "llama-3.3-70b", "mode": 2, "size": "large", "vramGB": 88,
             "weights": "meta-llama/Llama-3.3-70B-Instruct", "maxModelLen": 16384, "maxBatchSize": 16, "args": ["--quantization", "fp8"],
             "port": 8000, "useCase": "70B-class chat and agents"},
            {"slug": "deepseek-r1-distill-llama-70b-fp8", "mode": 2, "size": "large", "vramGB": 88,
             "weights": "deepseek-ai/DeepSeek-R1-Distill-Llama-70B", "maxModelLen": 16384, "maxBatchSize": 16, "args": ["--quantization", "fp8"],
             "port": 8000, "useCase": "step-by-step reasoning"},
            {"slug": "qwen-2.5-coder-32b-fp8", "mode": 2, "size": "large", "vramGB": 48,
             "weights": "Qwen/Qwen2.5-Coder-32B-Instruct", "maxModelLen": 32768, "maxBatchSize": 32, "args": ["--quantization", "fp8"],
             "port": 8000, "useCase": "large code models"}
          ]
        }
        """#
}
