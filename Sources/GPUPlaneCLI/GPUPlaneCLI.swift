// GPUPlaneCLI: under construction in this session.
