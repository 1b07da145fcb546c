import Prefork
import SystemPackage

/// A worker that cannot allocate its message buffer is out of memory: when every worker fails
/// so, systemd hears ENOMEM.
extension EchoHandlerError: ErrnoCarrying {
    public var errno: Errno {
        switch self {
        case .cannotAllocate: .noMemory
        }
    }
}
