import ForwardProtocols

// libFuzzer entry for the SSH identification-line probe.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    checkProbe("ssh", data, size, SSHBanner.probe)
    return 0
}
