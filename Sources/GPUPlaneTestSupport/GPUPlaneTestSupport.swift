// GPUPlaneTestSupport: under construction in this session.
