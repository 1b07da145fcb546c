import ForwardProtocols

// libFuzzer entry for the HTTP/1.x request-line and Host probe.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    checkProbe("http", data, size, HTTPRequestHead.probe)
    if let head = HTTPRequestHead.probe(UnsafeRawBufferPointer(start: data, count: size)).details {
        if head.method.isEmpty || head.target.isEmpty { failure("http: empty method or target") }
        if let host = head.host, host != host.lowercased() { failure("http: host not lower-cased") }
    }
    return 0
}
