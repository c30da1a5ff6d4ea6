import GPUPlaneCLI

await GPUPlaneCommand.runMain()
