import GPUPlaneCLI

GPUPlaneCommand.main()
