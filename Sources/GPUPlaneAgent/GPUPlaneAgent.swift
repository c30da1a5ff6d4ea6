// GPUPlaneAgent: under construction in this session.
