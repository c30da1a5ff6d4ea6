import Foundation
import GPUPlaneAPI

exit(await APIServerMain.run())
