internal import CPreforkShims
import Glibc
import Logging
import SystemPackage

/// Who the supervisor and its workers run as: the refusal to serve as root, the supervisor's
/// switch to the service account after binding, and each worker's final drop before serving.
///
/// The order is nginx's and Apache's: bind (ports below 1024, unix sockets in root's
/// directories), open the status file, then switch user. The supervisor switches too, but keeps
/// one capability, CAP_NET_BIND_SERVICE, because a reload may bind a new port below 1024. Each
/// worker gives that up as well before its handler runs: a worker serves with no capability at
/// all, `PR_SET_NO_NEW_PRIVS` set, and no way back to root.
enum Privileges {
    /// Checks, before anything is bound, that the configuration's account can be taken: that a
    /// root start names a user (or allows root), and that a start as another user can switch
    /// to the one named. Returns the account to switch to, nil when there is none.
    static func plan(for configuration: ServerConfiguration) throws(StartupError) -> ServiceAccount? {
        let account: ServiceAccount?
        do {
            account = try configuration.serviceAccount()
        } catch {
            throw StartupError(.configuration, error.description)
        }
        if geteuid() == 0, account?.uid ?? 0 == 0, !configuration.allowRoot {
            throw StartupError(
                .configuration, "refusing to serve as root: set user = \"NAME\" (or allow-root = true)")
        }
        if let account, !isCurrent(account), geteuid() != 0, pf_has_effective_capability(pf_cap_setuid) != 1 {
            throw StartupError(
                .configuration,
                "cannot switch to user \(account.userName) (uid \(account.uid), gid \(account.gid)) from uid \(geteuid()): \(Errno.notPermitted.text) (errno \(EPERM))"
            )
        }
        return account
    }

    /// The supervisor's switch, once its listeners are bound and its status file is open:
    /// supplementary groups cleared, then group, then user, keeping CAP_NET_BIND_SERVICE for
    /// reloads; `PR_SET_NO_NEW_PRIVS` set.
    static func switchSupervisor(to account: ServiceAccount, logger: Logger) throws(StartupError) {
        guard !isCurrent(account) else { return }
        let keepsBindCapability = geteuid() == 0
        if keepsBindCapability { _ = pf_set_keep_capabilities(1) }
        do throws(SystemCallError) {
            try switchIdentity(to: account)
            if keepsBindCapability {
                guard pf_keep_only_capability(pf_cap_net_bind_service) == 0 else {
                    throw SystemCallError.current("capset", "CAP_NET_BIND_SERVICE")
                }
                _ = pf_set_keep_capabilities(0)
            }
            guard pf_set_no_new_privileges() == 0 else { throw SystemCallError.current("prctl", "PR_SET_NO_NEW_PRIVS") }
            try verifyNoWayBack()
        } catch {
            throw StartupError(.configuration, "cannot switch to user \(account.userName): \(error)")
        }
        logger.info(
            "Running as user \(account.userName) (uid \(account.uid), gid \(account.gid))\(keepsBindCapability ? ", keeping CAP_NET_BIND_SERVICE for reloads" : "")"
        )
    }

    /// A worker's drop, after fork and before its handler's `prepare`: every capability gone
    /// (the supervisor's CAP_NET_BIND_SERVICE included), `PR_SET_NO_NEW_PRIVS` set, and root out
    /// of reach. A worker allowed to serve as root keeps root, with `PR_SET_NO_NEW_PRIVS`.
    static func dropInWorker() throws(SystemCallError) {
        if geteuid() != 0 {
            guard pf_drop_all_capabilities() == 0 else { throw SystemCallError.current("capset", "none") }
        }
        guard pf_set_no_new_privileges() == 0 else { throw SystemCallError.current("prctl", "PR_SET_NO_NEW_PRIVS") }
        if geteuid() != 0 { try verifyNoWayBack() }
    }

    /// Whether this process already runs as `account`, with no supplementary group but its own.
    private static func isCurrent(_ account: ServiceAccount) -> Bool {
        var real: uid_t = 0
        var effective: uid_t = 0
        var saved: uid_t = 0
        var realGroup: gid_t = 0
        var effectiveGroup: gid_t = 0
        var savedGroup: gid_t = 0
        _ = pf_getresuid(&real, &effective, &saved)
        _ = pf_getresgid(&realGroup, &effectiveGroup, &savedGroup)
        return [real, effective, saved].allSatisfy { $0 == account.uid }
            && [realGroup, effectiveGroup, savedGroup].allSatisfy { $0 == account.gid }
    }

    /// Groups first (changing them needs the privileges the user switch gives up), every one of
    /// the real, effective and saved ids, so nothing is left to switch back to.
    private static func switchIdentity(to account: ServiceAccount) throws(SystemCallError) {
        guard pf_clear_supplementary_groups() == 0 else { throw SystemCallError.current("setgroups", "[]") }
        guard pf_setresgid(account.gid) == 0 else {
            throw SystemCallError.current("setresgid", "\(account.gid)")
        }
        guard pf_setresuid(account.uid) == 0 else {
            throw SystemCallError.current("setresuid", "\(account.uid)")
        }
    }

    /// Proves the switch holds: becoming root again must fail.
    private static func verifyNoWayBack() throws(SystemCallError) {
        if setuid(0) == 0 || seteuid(0) == 0 {
            throw SystemCallError("setuid", "0 (still possible after the switch)", errno: .notPermitted)
        }
    }
}
