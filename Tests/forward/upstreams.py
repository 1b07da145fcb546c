#!/usr/bin/env python3
"""Small upstream servers for the forward handler's real-peer tests and its benchmark.

    upstreams.py --ready-file FILE MODE[:PORT] [MODE[:PORT] ...]

Every MODE listens on 127.0.0.1 (PORT 0 or none: an ephemeral port). Once every listener is
bound, FILE is written atomically with one "MODE PORT" line per listener — the readiness signal
and the way the caller learns the ports, so no port is ever guessed. One process serves all the
modes, a thread per connection (a selector loop for `hold`), until SIGTERM.

Modes (each line-oriented request ends with "\\n"):
  echo          reads up to the first "\\n" (or EOF), sends it back, closes.
  sink          reads to EOF, replies "<bytes> <sha256 hex>\\n", closes (uploads, half-close).
  count         reads "bulk:<bytes>\\n" and that many bytes, replies "<bytes received>\\n", closes:
                throughput without SHA-256 and without needing half-close from the relay.
  source        reads "download:<bytes>\\n", sends that many pseudo-random bytes, then a trailer
                line "<sha256 hex>\\n" of what it sent, closes.
  halfclose     reads to EOF, then replies with a 256 KiB body and "END <bytes received>\\n":
                only a relay that keeps the reverse direction open after the client's
                shutdown(SHUT_WR) delivers it whole.
  banner        speaks first: "220 banner.test ready\\r\\n", then answers one line with "221 bye".
  proxy-report  reads a PROXY protocol v1 or v2 header, replies "PROXY <version> <source ip>
                <source port>\\n" (or "NOPROXY <first bytes>\\n"), closes.
  hold          reads the first bytes, replies "ok\\n" once, then keeps the connection open until
                the client closes it (idle relays for memory measurements).
"""
import hashlib
import os
import selectors
import signal
import socket
import struct
import sys
import threading

HOST = "127.0.0.1"
CHUNK = 1 << 20
PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
HALF_CLOSE_BODY = b"0123456789abcdef" * 16384  # 256 KiB, no newline: the reply ends in one line
RECEIVE_TIMEOUT = 120.0  # a stuck client never pins a thread forever


def read_line(conn, limit=4096):
    data = b""
    while b"\n" not in data and len(data) < limit:
        chunk = conn.recv(limit - len(data))
        if not chunk:
            break
        data += chunk
    return data


def read_to_eof(conn, hashing):
    digest = hashlib.sha256() if hashing else None
    total = 0
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    while True:
        n = conn.recv_into(buffer)
        if n == 0:
            return total, (digest.hexdigest() if digest else "-")
        total += n
        if digest:
            digest.update(view[:n])


def pseudo_random_chunks(total):
    """Yields `total` bytes: one random 1 MiB block whose first 8 bytes carry the block's index,
    so a relay that dropped, repeated or reordered whole blocks still changes the hash."""
    block = bytearray(os.urandom(CHUNK))
    index = 0
    while total > 0:
        struct.pack_into(">Q", block, 0, index)
        n = min(total, CHUNK)
        yield memoryview(block)[:n]
        total -= n
        index += 1


def serve_echo(conn):
    conn.sendall(read_line(conn))


def serve_sink(conn):
    total, hexdigest = read_to_eof(conn, hashing=True)
    conn.sendall(f"{total} {hexdigest}\n".encode())


def serve_count(conn):
    head = read_line(conn)
    line, _, rest = head.partition(b"\n")
    if not line.startswith(b"bulk:"):
        conn.sendall(b"ERR expected bulk:<bytes>\n")
        return
    remaining = int(line[5:]) - len(rest)
    buffer = bytearray(CHUNK)
    while remaining > 0:
        n = conn.recv_into(buffer, min(CHUNK, remaining))
        if n == 0:
            break
        remaining -= n
    conn.sendall(f"{int(line[5:]) - max(remaining, 0)}\n".encode())


def serve_source(conn):
    request = read_line(conn).strip()
    if not request.startswith(b"download:"):
        conn.sendall(b"ERR expected download:<bytes>\n")
        return
    digest = hashlib.sha256()
    for chunk in pseudo_random_chunks(int(request.split(b":", 1)[1])):
        digest.update(chunk)
        conn.sendall(chunk)
    conn.sendall(digest.hexdigest().encode() + b"\n")


def serve_halfclose(conn):
    total, _ = read_to_eof(conn, hashing=False)
    conn.sendall(HALF_CLOSE_BODY + f"END {total}\n".encode())


def serve_banner(conn):
    conn.sendall(b"220 banner.test ready\r\n")
    read_line(conn)
    conn.sendall(b"221 bye\r\n")


def receive_exactly(conn, n, data=b""):
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("EOF inside the PROXY header")
        data += chunk
    return data


def parse_proxy_v2(conn, head):
    if head != PROXY_V2_SIGNATURE:
        raise ConnectionError(f"not a PROXY v2 signature: {head!r}")
    header = receive_exactly(conn, 16, head)
    length = struct.unpack(">H", header[14:16])[0]
    body = receive_exactly(conn, 16 + length, header)[16:]
    command, family = header[12] & 0x0F, header[13] >> 4
    if command == 0:
        return "v2 LOCAL - -"
    if family == 1:
        return f"v2 {socket.inet_ntop(socket.AF_INET, body[0:4])} {struct.unpack('>H', body[8:10])[0]}"
    if family == 2:
        return f"v2 {socket.inet_ntop(socket.AF_INET6, body[0:16])} {struct.unpack('>H', body[32:34])[0]}"
    return f"v2 family{family} - -"


def serve_proxy_report(conn):
    head = receive_exactly(conn, 6)
    if head == PROXY_V2_SIGNATURE[:6]:
        report = parse_proxy_v2(conn, receive_exactly(conn, 12, head))
    elif head == b"PROXY ":
        line = head
        while not line.endswith(b"\r\n") and len(line) < 108:
            line += receive_exactly(conn, 1)
        fields = line.decode("ascii", "replace").split()
        report = f"v1 {fields[2]} {fields[4]}" if len(fields) == 6 else f"v1 {fields[1]} - -"
    else:
        report = None
    reply = f"PROXY {report}\n" if report else f"NOPROXY {head!r}\n"
    sys.stdout.write(reply)
    sys.stdout.flush()
    conn.sendall(reply.encode())


HANDLERS = {"echo": serve_echo, "sink": serve_sink, "count": serve_count, "source": serve_source,
            "halfclose": serve_halfclose, "banner": serve_banner, "proxy-report": serve_proxy_report}


def handle(conn, serve):
    try:
        conn.settimeout(RECEIVE_TIMEOUT)
        serve(conn)
        conn.shutdown(socket.SHUT_WR)
        # drain until the client closes: closing with unread bytes queued would send a reset,
        # which can destroy the reply still in flight
        conn.settimeout(5.0)
        while conn.recv(65536):
            pass
    except OSError:
        pass
    finally:
        conn.close()


def accept_loop(listener, serve):
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handle, args=(conn, serve), daemon=True).start()


def hold_loop(listener):
    """One selector for every held connection: thousands of idle relays cost no threads."""
    selector = selectors.DefaultSelector()
    listener.setblocking(False)
    selector.register(listener, selectors.EVENT_READ, None)
    while True:
        for key, _ in selector.select():
            if key.fileobj is listener:
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(False)
                selector.register(conn, selectors.EVENT_READ, "new")
                continue
            conn = key.fileobj
            try:
                data = conn.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                selector.unregister(conn)
                conn.close()
            elif key.data == "new":
                conn.sendall(b"ok\n")
                selector.modify(conn, selectors.EVENT_READ, "held")


def listen(port):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, port))
    listener.listen(4096)
    return listener


def main(argv):
    if len(argv) < 4 or argv[1] != "--ready-file":
        sys.exit(__doc__)
    ready_file = argv[2]
    threading.stack_size(256 * 1024)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    lines = []
    for spec in argv[3:]:
        mode, _, port = spec.partition(":")
        if mode != "hold" and mode not in HANDLERS:
            sys.exit(f"upstreams.py: unknown mode {mode!r}")
        listener = listen(int(port or 0))
        target = (hold_loop, (listener,)) if mode == "hold" else (accept_loop, (listener, HANDLERS[mode]))
        threading.Thread(target=target[0], args=target[1], daemon=True).start()
        lines.append(f"{mode} {listener.getsockname()[1]}\n")
    with open(ready_file + ".tmp", "w") as f:
        f.writelines(lines)
    os.rename(ready_file + ".tmp", ready_file)
    while True:
        signal.pause()


if __name__ == "__main__":
    main(sys.argv)
