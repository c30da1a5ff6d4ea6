#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import GPUPlaneAgent

exit(await NodeAgentMain.run())
