#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import GPUPlaneAgent

// Simulated node-agents for whole-system scale runs (docs/benchmarks.md, "Fleet").
exit(await HollowFleetMain.run())
