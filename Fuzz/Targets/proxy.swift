import ForwardProtocols

// libFuzzer entry for the PROXY v1/v2 reader, the header writer (round trips) and the address
// and CIDR text parsers that `accept-proxy-from` lists and v1 headers go through.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    checkProbe("proxy", data, size) { ProxyHeader.parse($0) }
    checkProbe("proxy-v1", data, size) { ProxyHeader.parse($0, accepting: [.v1]) }
    checkProbe("proxy-v2", data, size) { ProxyHeader.parse($0, accepting: [.v2]) }
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    if let header = ProxyHeader.parse(bytes).details {
        if header.length > size || header.length < 15 { failure("proxy: length \(header.length) of \(size)") }
        if (header.source == nil) != (header.destination == nil) { failure("proxy: half an address pair") }
        // What we would send for these addresses reads back the same, in both versions.
        for version in [ProxyProtocolVersion.v1, .v2] {
            let encoded = ProxyHeader.encode(version, source: header.source, destination: header.destination)
            guard let again = ProxyHeader.parse(encoded).details, again.length == encoded.count else {
                failure("proxy: encoded \(version) header unreadable")
            }
            let sameFamilies: Bool
            switch (header.source?.address, header.destination?.address) {
            case (.v4?, .v6?), (.v6?, .v4?): sameFamilies = false
            default: sameFamilies = true
            }
            if sameFamilies, again.source != header.source || again.destination != header.destination {
                failure("proxy: \(version) round trip changed the addresses")
            }
        }
    }
    // Short inputs double as address and CIDR text.
    if size <= 64 {
        let text = String(decoding: bytes, as: UTF8.self)
        if let address = IPAddress(text) {
            if IPAddress(address.description) != address { failure("ip: \(text) does not round-trip") }
        }
        if let block = CIDRBlock(text) {
            guard let again = CIDRBlock(block.description), again == block else { failure("cidr: \(text)") }
        }
    }
    return 0
}
