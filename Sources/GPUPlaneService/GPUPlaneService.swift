// GPUPlaneService: under construction in this session.
