import Foundation
import GPUPlaneAPI

APIServerMain.limitMallocArenas()
exit(await APIServerMain.run())
