import Foundation
import GPUPlaneAgent

exit(await NodeAgentMain.run())
