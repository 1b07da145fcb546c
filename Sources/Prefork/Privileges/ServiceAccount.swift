import Glibc

/// The user and group the workers serve as (`user`, `group`), resolved to numbers.
///
/// Names are looked up once, when the configuration is validated (`getpwnam_r`, `getgrnam_r`),
/// so an unknown name is a configuration error before anything is bound, and the supervisor
/// never consults NSS after it has forked.
public struct ServiceAccount: Sendable, Equatable {
    /// The user as written in the configuration, for messages.
    public let userName: String
    /// The group as written, or the user's primary group's name or number when none was.
    public let groupName: String
    public let uid: uid_t
    public let gid: gid_t

    /// Resolves `user` (a name or a numeric uid) and `group` (a name, a numeric gid, or empty for
    /// the user's primary group).
    ///
    /// - Throws: a ``SettingError`` naming what cannot be resolved.
    static func resolve(user: String, group: String) throws(SettingError) -> ServiceAccount {
        let (uid, primaryGroup) = try uid(of: user)
        if group.isEmpty {
            guard let primaryGroup else { throw SettingError("uid \(uid) has no passwd entry: set group as well") }
            return ServiceAccount(userName: user, groupName: "\(primaryGroup)", uid: uid, gid: primaryGroup)
        }
        return ServiceAccount(userName: user, groupName: group, uid: uid, gid: try gid(of: group))
    }

    /// The uid of `user` (a name or a number) and its primary gid, when it has a passwd entry.
    static func uid(of user: String) throws(SettingError) -> (uid: uid_t, primaryGroup: gid_t?) {
        if let entry = lookUpUser(user) { return (entry.uid, entry.gid) }
        guard let number = uid_t(user) else { throw SettingError("no such user") }
        return (number, lookUpUser(uid: number))
    }

    /// The gid of `group` (a name or a number).
    static func gid(of group: String) throws(SettingError) -> gid_t {
        guard let gid = lookUpGroup(group) ?? gid_t(group) else { throw SettingError("no such group") }
        return gid
    }

    /// The passwd entry of `name`: its uid and primary gid.
    private static func lookUpUser(_ name: String) -> (uid: uid_t, gid: gid_t)? {
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 4096)
        let status = getpwnam_r(name, &entry, &buffer, buffer.count, &result)
        guard status == 0, result != nil else { return nil }
        return (entry.pw_uid, entry.pw_gid)
    }

    /// The primary gid of the passwd entry of `uid`, if there is one.
    private static func lookUpUser(uid: uid_t) -> gid_t? {
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 4096)
        let status = getpwuid_r(uid, &entry, &buffer, buffer.count, &result)
        guard status == 0, result != nil else { return nil }
        return entry.pw_gid
    }

    /// The gid of the group called `name`.
    private static func lookUpGroup(_ name: String) -> gid_t? {
        var entry = Glibc.group()
        var result: UnsafeMutablePointer<Glibc.group>?
        // Large groups list many members; the gid is all that is needed, but the entry comes whole.
        var buffer = [CChar](repeating: 0, count: 65536)
        let status = getgrnam_r(name, &entry, &buffer, buffer.count, &result)
        guard status == 0, result != nil else { return nil }
        return entry.gr_gid
    }
}
