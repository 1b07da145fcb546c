internal import CPreforkShims
import ForwardProtocols
import Glibc
import SystemPackage

/// Why a connection on a listener with `accept-proxy` was closed before its handler.
enum ProxyIntakeError: Error, CustomStringConvertible {
    /// The peer is not in `accept-proxy-from`.
    case untrustedPeer
    /// The first bytes are not a PROXY header of an accepted version.
    case invalidHeader(AcceptProxy)
    /// The header did not come whole within `initial-timeout`.
    case headerTimedOut
    /// The peer closed before the header was whole.
    case closedInHeader
    /// Any failure the plain initial read also has (a timeout after the header, a reset…).
    case connection(AcceptError)

    var description: String {
        switch self {
        case .untrustedPeer: "peer not in accept-proxy-from"
        case .invalidHeader(let accepted): "no valid PROXY header (accept-proxy = \(accepted.rawValue))"
        case .headerTimedOut: "PROXY header not received within initial-timeout"
        case .closedInHeader: "peer closed the connection within the PROXY header"
        case .connection(let error): error.description
        }
    }
}

/// Reads the PROXY header that a listener with `accept-proxy` requires before the client's own
/// bytes, then the client's first bytes — all within `initial-timeout` from the accept.
///
/// The header is peeked at and only its own bytes are consumed, so nothing of the client's data
/// is read into a buffer too small for it: what follows the header is read exactly like a plain
/// connection's initial data. One per worker that has such a listener; off the path of every
/// other listener.
struct ProxyHeaderIntake {
    /// Room for the longest header accepted (v2 with 2 KiB of addresses and TLVs).
    let header: UnsafeMutableRawBufferPointer
    /// `initial-timeout`, in milliseconds.
    let timeoutMs: Int

    init(initialTimeout: Duration) {
        header = UnsafeMutableRawBufferPointer.allocate(byteCount: ProxyHeader.maximumV2Length, alignment: 16)
        let (seconds, attoseconds) = initialTimeout.components
        timeoutMs = max(1, Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000))
    }

    /// Checks the peer in `peer`, reads and strips the header, puts its source in `peer` and its
    /// destination in ``ConnectionState`` (for connections on `listener`, the listening socket), then reads the client's first bytes into `buffer`. Returns their
    /// count: at least 1, or 0 for a silent client when `answersSilentClients`.
    func read(
        from fd: Int32, policy: ProxyProtocolPolicy, listener: Int32, peer: PeerAddressBuffer,
        into buffer: UnsafeMutableRawBufferPointer,
        answersSilentClients: Bool
    ) throws(ProxyIntakeError) -> Int {
        // Every connection on this listener comes through here: what a previous one's header
        // said is cleared before anything else.
        ConnectionState.beginProxied(on: listener)
        if !policy.trustedPeers.isEmpty {
            guard let address = IPAddress(peer.storage, length: peer.length.pointee), policy.trusts(address) else {
                throw .untrustedPeer
            }
        }
        let deadline = Monotonic.now() + UInt64(timeoutMs) * 1_000_000
        let parsed = try readHeader(from: fd, accepting: policy.accept, deadline: deadline)
        if let source = parsed.source, let destination = parsed.destination {
            peer.length.pointee = source.store(in: peer.storage)
            ConnectionState.recordProxiedLocal(destination)
        }
        do throws(AcceptError) {
            guard try waitReadable(fd, until: deadline) != 0 else { throw .initialReadTimedOut }
            return try readInitialData(from: fd, into: buffer, immediate: true)
        } catch .initialReadTimedOut where answersSilentClients {
            return 0
        } catch {
            throw .connection(error)
        }
    }

    /// Peeks until the queued bytes hold a whole header, then consumes exactly its bytes.
    private func readHeader(from fd: Int32, accepting: AcceptProxy, deadline: UInt64) throws(ProxyIntakeError)
        -> ProxyHeader
    {
        var lowWaterRaised = false
        defer { if lowWaterRaised { setLowWater(fd, 1) } }
        while true {
            let events: Int16
            do throws(AcceptError) {
                events = try waitReadable(fd, until: deadline)
            } catch {
                throw .connection(error)
            }
            guard events != 0 else { throw .headerTimedOut }
            let count = recv(fd, header.baseAddress, header.count, Int32(MSG_PEEK | MSG_DONTWAIT))
            if count == 0 { throw .closedInHeader }
            if count < 0 {
                let error = Errno(rawValue: Glibc.errno)
                switch error {
                case .wouldBlock, .resourceTemporarilyUnavailable: continue
                case .interrupted:
                    if StopRequest.current == .immediate { throw .connection(.stopRequested) }
                    continue
                case .connectionReset, .brokenPipe, .timedOut: throw .connection(.connectionReset)
                default: throw .connection(.failed(SystemCallError("recv", errno: error)))
                }
            }
            switch ProxyHeader.parse(UnsafeRawBufferPointer(rebasing: header[..<count]), accepting: accepting.versions)
            {
            case .match(let parsed):
                try consume(parsed.length, from: fd)
                return parsed
            case .noMatch:
                throw .invalidHeader(accepting)
            case .needMore(let atLeast):
                guard atLeast <= header.count else { throw .invalidHeader(accepting) }
                // Nothing more is coming: the peer has shut down its side.
                if events & (peerShutDownEvent | Int16(POLLHUP)) != 0 { throw .closedInHeader }
                // Part of a header: wait in poll until the rest has come, rather than spinning
                // on bytes that are already there.
                setLowWater(fd, atLeast)
                lowWaterRaised = true
            }
        }
    }

    /// Reads and drops the header's `length` bytes, which the peek saw queued.
    private func consume(_ length: Int, from fd: Int32) throws(ProxyIntakeError) {
        var done = 0
        while done < length {
            let count = recv(fd, header.baseAddress! + done, length - done, Int32(MSG_DONTWAIT))
            if count > 0 {
                done += count
            } else if count < 0 && Glibc.errno == EINTR {
                continue
            } else {
                throw .connection(.connectionReset)
            }
        }
    }

    /// SO_RCVLOWAT: poll reports the socket readable only once this many bytes are queued.
    private func setLowWater(_ fd: Int32, _ bytes: Int) {
        var value = Int32(bytes)
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &value, socklen_t(MemoryLayout<Int32>.size))
    }
}

/// POLLRDHUP (Linux; not in Glibc's Swift module): the peer has shut down its sending side.
private let peerShutDownEvent: Int16 = 0x2000

/// Waits until `fd` has bytes to read (or its peer closed or reset it), up to `deadline`
/// (monotonic ns); returns poll's events, 0 when the deadline passed first.
@discardableResult
private func waitReadable(_ fd: Int32, until deadline: UInt64) throws(AcceptError) -> Int16 {
    switch waitForEvents(Int16(POLLIN) | peerShutDownEvent, on: fd, until: deadline) {
    case .ready(let events): return events
    case .deadlinePassed: return 0
    case .stopRequested: throw .stopRequested
    case .failed(let error): throw .failed(error)
    }
}

extension IPAddress {
    /// The IP address of a socket address (IPv4-mapped IPv6 ones as they are: CIDR blocks match
    /// either form); nil for another family.
    init?(_ storage: UnsafePointer<sockaddr_storage>, length: socklen_t) {
        switch Int32(storage.pointee.ss_family) {
        case AF_INET where length >= socklen_t(MemoryLayout<sockaddr_in>.size):
            let address = UnsafeRawPointer(storage).assumingMemoryBound(to: sockaddr_in.self).pointee.sin_addr
            self = .v4(UInt32(bigEndian: address.s_addr))
        case AF_INET6 where length >= socklen_t(MemoryLayout<sockaddr_in6>.size):
            var bytes = UnsafeRawPointer(storage).assumingMemoryBound(to: sockaddr_in6.self).pointee.sin6_addr
            let (high, low) = withUnsafeBytes(of: &bytes) { raw in
                (
                    UInt64(bigEndian: raw.loadUnaligned(as: UInt64.self)),
                    UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
                )
            }
            self = .v6(high: high, low: low)
        default:
            return nil
        }
    }
}

extension IPEndpoint {
    /// The IP address and port of a socket address (IPv4-mapped IPv6 ones as they are); nil for
    /// another family.
    init?(_ storage: UnsafePointer<sockaddr_storage>, length: socklen_t) {
        guard let address = IPAddress(storage, length: length) else { return nil }
        let port: in_port_t
        switch address {
        case .v4: port = UnsafeRawPointer(storage).assumingMemoryBound(to: sockaddr_in.self).pointee.sin_port
        case .v6: port = UnsafeRawPointer(storage).assumingMemoryBound(to: sockaddr_in6.self).pointee.sin6_port
        }
        self.init(address: address, port: UInt16(bigEndian: port))
    }

    /// The IP address and port of `address`; nil for a unix socket.
    package init?(_ address: SocketAddress) {
        guard
            let endpoint = address.withUnsafeSockaddr({ sockaddr, length in
                // The pointer is to the address's whole sockaddr_storage.
                sockaddr.withMemoryRebound(to: sockaddr_storage.self, capacity: 1) { IPEndpoint($0, length: length) }
            })
        else { return nil }
        self = endpoint
    }

    /// Writes the endpoint as a `sockaddr_in` or `sockaddr_in6` into `storage`; returns its length.
    func store(in storage: UnsafeMutablePointer<sockaddr_storage>) -> socklen_t {
        storage.pointee = sockaddr_storage()
        let raw = UnsafeMutableRawPointer(storage)
        switch address {
        case .v4(let value):
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            sin.sin_addr.s_addr = value.bigEndian
            raw.storeBytes(of: sin, as: sockaddr_in.self)
            return socklen_t(MemoryLayout<sockaddr_in>.size)
        case .v6(let high, let low):
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &sin6.sin6_addr) { bytes in
                bytes.storeBytes(of: high.bigEndian, toByteOffset: 0, as: UInt64.self)
                bytes.storeBytes(of: low.bigEndian, toByteOffset: 8, as: UInt64.self)
            }
            raw.storeBytes(of: sin6, as: sockaddr_in6.self)
            return socklen_t(MemoryLayout<sockaddr_in6>.size)
        }
    }
}
