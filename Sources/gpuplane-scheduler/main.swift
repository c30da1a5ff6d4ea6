import Foundation
import GPUPlaneScheduling

exit(await SchedulerMain.run())
