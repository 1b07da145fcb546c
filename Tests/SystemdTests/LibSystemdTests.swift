import SystemPackage
import Testing

@testable import Systemd

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The loader behind every libsystemd call: dlopen of the library, dlsym of each function used,
/// and the one-line error when either fails (driven here with other libraries' names).
@Suite struct LibSystemdTests {
    @Test func libsystemdLoadsWithEveryFunction() throws {
        #expect(LibSystemd.soname == "libsystemd.so.0")
        try LibSystemd.check(LibSystemd.soname)
        try LibSystemd.load()
    }

    @Test func aLibraryThatCannotBeFoundIsAnErrorNamingItAndTheLoadersReason() throws {
        let error = #expect(throws: SystemCallError.self) { try LibSystemd.check("libpreforkd-absent.so.0") }
        #expect(error?.operation == "dlopen")
        #expect(error?.errno == Errno(rawValue: ELIBACC))
        // dlerror's "libpreforkd-absent.so.0: cannot open …" without its repeated soname.
        #expect(
            error?.description
                == "dlopen libpreforkd-absent.so.0 (cannot open shared object file: No such file or directory):"
                + " \(Errno(rawValue: ELIBACC).text) (errno \(ELIBACC))")
    }

    @Test func aLibraryWithoutTheFunctionsIsAnErrorNamingTheFirstMissingOne() throws {
        // libc loads (it is loaded already) but has none of libsystemd's functions.
        let error = #expect(throws: SystemCallError.self) { try LibSystemd.check("libc.so.6") }
        #expect(error?.operation == "dlsym")
        #expect(error?.errno == .noFunction)
        #expect(error?.object.hasPrefix("libc.so.6 (") == true, "\(String(describing: error))")
        #expect(error?.object.hasSuffix("undefined symbol: sd_listen_fds_with_names)") == true)
    }

    @Test func aFileThatIsNoLibraryIsAnError() throws {
        let error = #expect(throws: SystemCallError.self) { try LibSystemd.check("/dev/null") }
        #expect(error?.operation == "dlopen")
        #expect(error?.object.hasPrefix("/dev/null (") == true, "\(String(describing: error))")
    }
}
