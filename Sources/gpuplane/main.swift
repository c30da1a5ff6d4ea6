print("gpuplane")
