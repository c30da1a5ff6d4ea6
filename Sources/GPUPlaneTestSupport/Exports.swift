// The etcd and podman fixtures, child-process supervision, `eventually` and the stand-in model
// server live in GPUPlaneLocal, which `gpuplane-local` runs without any test support; tests and
// benchmarks get them through this module as before.
@_exported import GPUPlaneLocal
