#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import GPUPlaneScheduling

exit(await SchedulerMain.run())
