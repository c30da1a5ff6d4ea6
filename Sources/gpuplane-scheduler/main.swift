#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import GPUPlaneScheduling

SchedulerMain.limitMallocArenas()
exit(await SchedulerMain.run())
