/// The catalog gpuplane ships, in the JSON shape of an operator's `catalog-file` override. Kept
/// in source rather than as a bundle resource: resource bundles need Foundation's `Bundle`,
/// which the node-agent does not link.
enum StandardCatalog {
    static let json = #"""
        {
          "models": [
            {"slug": "phi-3.5-mini", "mode": 3, "size": "small", "vramGB": 10,
             "image": "gpuplane/model-server:latest", "args": ["--model", "microsoft/Phi-3.5-mini-instruct", "--max-model-len", "8192"],
             "port": 8000, "useCase": "small chat and routing, lowest latency"},
            {"slug": "llama-3.1-8b", "mode": 3, "size": "small", "vramGB": 20,
             "image": "gpuplane/model-server:latest", "args": ["--model", "meta-llama/Llama-3.1-8B-Instruct", "--max-model-len", "16384"],
             "port": 8000, "useCase": "general chat and tool use"},
            {"slug": "qwen-2.5-coder-7b", "mode": 3, "size": "small", "vramGB": 18,
             "image": "gpuplane/model-server:latest", "args": ["--model", "Qwen/Qwen2.5-Coder-7B-Instruct", "--max-model-len", "16384"],
             "port": 8000, "useCase": "code completion and review"},
            {"slug": "nomic-embed", "mode": 3, "size": "small", "vramGB": 2,
             "image": "gpuplane/model-server:latest", "args": ["--model", "nomic-ai/nomic-embed-text-v1.5", "--task", "embed"],
             "port": 8000, "useCase": "text embeddings for search and RAG", "task": "embedding"},
            {"slug": "qwen-2.5-14b", "mode": 3, "size": "mid", "vramGB": 36,
             "image": "gpuplane/model-server:latest", "args": ["--model", "Qwen/Qwen2.5-14B-Instruct", "--max-model-len", "16384"],
             "port": 8000, "useCase": "stronger reasoning that still shares a GPU"},
            {"slug": "llama-3.3-70b", "mode": 2, "size": "large", "vramGB": 88,
             "image": "gpuplane/model-server:latest", "args": ["--model", "meta-llama/Llama-3.3-70B-Instruct", "--quantization", "fp8"],
             "port": 8000, "useCase": "70B-class chat and agents"},
            {"slug": "deepseek-r1-distill-llama-70b-fp8", "mode": 2, "size": "large", "vramGB": 88,
             "image": "gpuplane/model-server:latest", "args": ["--model", "deepseek-ai/DeepSeek-R1-Distill-Llama-70B", "--quantization", "fp8"],
             "port": 8000, "useCase": "step-by-step reasoning"},
            {"slug": "qwen-2.5-coder-32b-fp8", "mode": 2, "size": "large", "vramGB": 48,
             "image": "gpuplane/model-server:latest", "args": ["--model", "Qwen/Qwen2.5-Coder-32B-Instruct", "--quantization", "fp8"],
             "port": 8000, "useCase": "large code models"}
          ]
        }
        """#
}
