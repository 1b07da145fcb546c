import SystemCalls
import SystemPackage
import Testing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

@Suite struct SystemCallErrorTests {
    @Test func descriptionNamesOperationObjectTextAndNumber() {
        #expect(
            SystemCallError("bind", "127.0.0.1:11000", errno: .addressInUse).description
                == "bind 127.0.0.1:11000: Address already in use (errno 98)")
        #expect(
            SystemCallError("getsockname", "fd 3 (web)", errno: .badFileDescriptor).description
                == "getsockname fd 3 (web): Bad file descriptor (errno 9)")
    }

    @Test func withoutAnObjectTheOperationStandsAlone() {
        #expect(
            SystemCallError("sd_notify", errno: .connectionRefused).description
                == "sd_notify: Connection refused (errno 111)")
        #expect(SystemCallError("sd_notify", errno: .connectionRefused).object == "")
    }

    @Test func currentReadsTheThreadsErrno() {
        errno = ENOENT
        let error = SystemCallError.current("open", "/nowhere")
        #expect(error == SystemCallError("open", "/nowhere", errno: .noSuchFileOrDirectory))
    }

    @Test func errnoTextIsStrerror() {
        #expect(Errno.addressInUse.text == "Address already in use")
        #expect(Errno.addressInUse.text == Errno.addressInUse.description)
    }

    @Test func resultGetNamesTheFailedCall() throws {
        let failed: Result<Int32, Errno> = .failure(.permissionDenied)
        #expect(throws: SystemCallError("chmod", "/run/x.sock", errno: .permissionDenied)) {
            try failed.get("chmod", "/run/x.sock")
        }
        let succeeded: Result<Int32, Errno> = .success(3)
        #expect(try succeeded.get("socket") == 3)
    }
}
