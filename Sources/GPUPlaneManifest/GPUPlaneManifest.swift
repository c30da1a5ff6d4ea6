// GPUPlaneManifest: under construction in this session.
