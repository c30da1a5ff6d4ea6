// GPUPlaneAPI: under construction in this session.
