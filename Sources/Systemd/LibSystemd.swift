import CSystemd
import SystemPackage

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// libsystemd, which this module loads with `dlopen(3)` the first time it needs it rather than
/// linking it: a process that is not socket-activated, has no watchdog and does not log to the
/// journal never maps it (nor its six dependencies).
///
/// Every function of this module that calls into libsystemd loads it first and, when that fails,
/// throws the loader's error (see ``load()``). Package API: the executable's log set-up asks
/// before it picks the journal.
package enum LibSystemd {
    /// The library's soname, "libsystemd.so.0".
    package static let soname = PF_SD_LIBRARY

    /// Loads libsystemd once per process (a forked child inherits it) and resolves the functions
    /// this module uses.
    ///
    /// - Throws: ``SystemCallError`` naming the library and the loader's text:
    ///   `dlopen libsystemd.so.0 (cannot open shared object file: No such file or directory): Can
    ///   not access a needed shared library (errno 79)`; or `dlsym` with `ENOSYS` when the library
    ///   lacks one of the functions.
    package static func load() throws(SystemCallError) {
        let result = pf_sd_load()
        guard result < 0 else { return }
        throw self.failure(result, soname: self.soname, text: pf_sd_load_error().map { String(cString: $0) } ?? "")
    }

    /// Loads `soname` as ``load()`` loads libsystemd, resolves the same functions, and unloads it
    /// again; throws what ``load()`` would throw for it.
    package static func check(_ soname: String) throws(SystemCallError) {
        var text = [CChar](repeating: 0, count: 512)
        let result = pf_sd_check_library(soname, &text, text.count)
        guard result < 0 else { return }
        let bytes = text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        throw self.failure(result, soname: soname, text: String(decoding: bytes, as: UTF8.self))
    }

    /// The error for a failed load: `dlopen` (library not loaded) or `dlsym` (a function
    /// missing), on `soname (loader's text)`; the text's own "soname: " prefix is left out.
    static func failure(_ result: Int32, soname: String, text: String) -> SystemCallError {
        let prefix = soname + ": "
        let reason = text.hasPrefix(prefix) ? String(text.dropFirst(prefix.count)) : text
        let operation = result == -ENOSYS ? "dlsym" : "dlopen"
        return SystemCallError(operation, "\(soname) (\(reason))", errno: Errno(rawValue: -result))
    }
}
