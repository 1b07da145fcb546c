import ForwardProtocols

// libFuzzer entry for the TLS ClientHello probe and the routing helpers fed by it.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    checkProbe("tls", data, size, TLSClientHello.probe)
    if let hello = TLSClientHello.probe(UnsafeRawBufferPointer(start: data, count: size)).details {
        if let name = hello.serverName {
            // A name the probe accepted is a valid exact pattern that matches itself.
            guard let pattern = ServerNamePattern(name), pattern.matches(name) else { failure("tls: SNI \(name)") }
            if name != name.lowercased() { failure("tls: SNI not lower-cased") }
        }
        _ = hello.offersALPN(anyOf: ["h2", "http/1.1"])
    }
    return 0
}
