// GPUPlaneStore: under construction in this session.
