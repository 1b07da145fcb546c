import Glibc
import Logging

/// The open-file limit (RLIMIT_NOFILE) the supervisor sets once at start; every worker inherits
/// it across fork.
///
/// A relay keeps two sockets per connection open in a worker for as long as the connection
/// lasts, so the soft limit's usual 1024 comes too soon. systemd's advice for services is to
/// raise the soft limit to the hard one themselves (the hard limit is the unit's
/// `LimitNOFILE=`); `open-files` asks for a number of its own.
enum OpenFileLimit {
    /// The limits in force: the soft one, and the hard one above which it cannot be raised.
    struct Limits: Equatable {
        var soft: rlim_t
        var hard: rlim_t
    }

    /// The process's limits now.
    static func current() -> Limits {
        var limit = rlimit()
        _ = getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        return Limits(soft: limit.rlim_cur, hard: limit.rlim_max)
    }

    /// Sets the limit `requested` asks for (`open-files`; 0: the soft limit up to the hard one)
    /// and logs at debug what it got.
    ///
    /// - Throws: a configuration ``StartupError`` when `requested` is above the hard limit and the
    ///   hard limit cannot be raised (no CAP_SYS_RESOURCE).
    static func apply(_ requested: Int, logger: Logger) throws(StartupError) {
        let before = current()
        let wanted: Limits
        if requested == 0 {
            wanted = Limits(soft: before.hard, hard: before.hard)
        } else {
            let count = rlim_t(requested)
            wanted = Limits(soft: count, hard: max(count, before.hard))
        }
        if wanted != before, !set(wanted) {
            if requested == 0 {
                // An unlimited hard limit is not a value the soft one can take: keep what there is.
                logger.debug("Open-file limit left at \(before.soft) (hard \(describe(before.hard)))")
                return
            }
            throw StartupError(
                .configuration,
                "open-files = \(requested) is above the hard limit of \(describe(before.hard)), which this process may not raise (it needs CAP_SYS_RESOURCE, or LimitNOFILE= in the unit)"
            )
        }
        let after = current()
        logger.debug("Open-file limit: \(after.soft) (hard \(describe(after.hard)))")
    }

    private static func set(_ limits: Limits) -> Bool {
        var limit = rlimit(rlim_cur: limits.soft, rlim_max: limits.hard)
        return setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0
    }

    private static func describe(_ limit: rlim_t) -> String {
        limit == rlim_t.max ? "unlimited" : "\(limit)"  // RLIM_INFINITY, all ones
    }
}
