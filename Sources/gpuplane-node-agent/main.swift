#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import GPUPlaneAgent

NodeAgentMain.limitMallocArenas()
exit(await NodeAgentMain.run())
