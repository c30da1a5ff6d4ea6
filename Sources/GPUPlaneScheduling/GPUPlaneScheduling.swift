// GPUPlaneScheduling: under construction in this session.
