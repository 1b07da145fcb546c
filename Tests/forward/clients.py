#!/usr/bin/env python3
"""Clients for the forward handler's real-peer tests and benchmark; every one has a deadline.

    clients.py upload   HOST PORT BYTES PREFIX     send PREFIX + BYTES, half-close, check the sink's hash
    clients.py download HOST PORT BYTES            fetch BYTES from `source`, check its trailer hash
    clients.py burst    HOST PORT N DEADLINE       N connects at once, each echoed by `echo`
    clients.py silent   HOST PORT DEADLINE         connect, say nothing, expect the `banner` greeting
    clients.py whoami   HOST PORT SOURCE LINE      connect from SOURCE, send LINE, print the reply

Each prints one line (what it saw) and exits 0 when the check holds, 1 with the reason when not.
The upstream modes are those of upstreams.py. `hold_connections` and `send_counted` are imported by
the benchmark.
"""
import hashlib
import os
import resource
import selectors
import socket
import sys
import time

from upstreams import CHUNK, pseudo_random_chunks  # the bytes the upstreams send and check alike

TRANSFER_DEADLINE = 120.0


class CheckFailed(Exception):
    pass


def connect(host, port, timeout=5.0, source=None):
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    if source:
        sock.bind((source, 0))
    sock.settimeout(timeout)
    sock.connect((host, port))
    return sock


def receive_all(sock, deadline):
    data = bytearray()
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            return bytes(data)
        data += chunk


def send_bytes(host, port, total, prefix=b"", hashing=True, deadline_s=TRANSFER_DEADLINE):
    """Sends prefix + `total` bytes, half-closes, returns (reply, local sha256 hex, seconds)."""
    digest = hashlib.sha256(prefix)
    deadline = time.monotonic() + deadline_s
    started = time.monotonic()
    with connect(host, port, timeout=deadline_s) as sock:
        sock.sendall(prefix)
        for chunk in pseudo_random_chunks(total):
            if hashing:
                digest.update(chunk)
            sock.sendall(chunk)
            if time.monotonic() > deadline:
                raise CheckFailed(f"upload not done within {deadline_s:g} s")
        sock.shutdown(socket.SHUT_WR)
        reply = receive_all(sock, deadline)
    return reply.decode("ascii", "replace").strip(), digest.hexdigest(), time.monotonic() - started


def send_counted(host, port, total, deadline_s=TRANSFER_DEADLINE):
    """Sends "bulk:<total>" and `total` bytes to the `count` upstream; returns (bytes the upstream
    counted, seconds from connect to its reply). No half-close: every relay can carry it."""
    deadline = time.monotonic() + deadline_s
    started = time.monotonic()
    with connect(host, port, timeout=deadline_s) as sock:
        sock.sendall(f"bulk:{total}\n".encode())
        for chunk in pseudo_random_chunks(total):
            sock.sendall(chunk)
            if time.monotonic() > deadline:
                raise CheckFailed(f"transfer not done within {deadline_s:g} s")
        reply = b""
        while not reply.endswith(b"\n"):
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(64)
            if not chunk:
                break
            reply += chunk
    counted = int(reply) if reply.strip().isdigit() else 0
    return counted, time.monotonic() - started


def upload(host, port, total, prefix):
    reply, local, seconds = send_bytes(host, port, total, prefix.encode())
    expected = f"{total + len(prefix)} {local}"
    if reply != expected:
        raise CheckFailed(f"sink saw {reply!r}, sent {expected!r}")
    return f"{total} bytes up, sha256 {local[:16]}…, {total / seconds / 1e6:.0f} MB/s"


def download(host, port, total):
    deadline = time.monotonic() + TRANSFER_DEADLINE
    started = time.monotonic()
    digest = hashlib.sha256()
    with connect(host, port, timeout=TRANSFER_DEADLINE) as sock:
        sock.sendall(f"download:{total}\n".encode())
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        received = 0
        tail = b""
        while True:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            n = sock.recv_into(buffer)
            if n == 0:
                break
            body = min(n, max(0, total - received))
            digest.update(view[:body])
            tail += bytes(view[body:n])
            received += n
    seconds = time.monotonic() - started
    if received - len(tail) != total:
        raise CheckFailed(f"got {received - len(tail)} body bytes, wanted {total}")
    if tail.decode("ascii", "replace").strip() != digest.hexdigest():
        raise CheckFailed(f"trailer {tail[:70]!r} differs from the received bytes' sha256 {digest.hexdigest()}")
    return f"{total} bytes down, sha256 {digest.hexdigest()[:16]}…, {total / seconds / 1e6:.0f} MB/s"


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def burst(host, port, count, deadline_s):
    """Opens `count` connections at once (non-blocking connects), then expects every one to be
    echoed: the server's accept queue must take the whole burst."""
    raise_fd_limit()
    selector = selectors.DefaultSelector()
    deadline = time.monotonic() + deadline_s
    pending = {}
    for i in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex((host, port))
        line = f"burst {i}\n".encode()
        pending[sock] = [line, b""]
        selector.register(sock, selectors.EVENT_WRITE)
    answered, failures = 0, {}
    while pending and time.monotonic() < deadline:
        for key, events in selector.select(timeout=max(0.01, deadline - time.monotonic())):
            sock = key.fileobj
            line, got = pending[sock]
            try:
                if events & selectors.EVENT_WRITE:
                    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if error:
                        raise OSError(error, os.strerror(error))
                    sock.send(line)
                    selector.modify(sock, selectors.EVENT_READ)
                    continue
                chunk = sock.recv(4096)
                got += chunk
                pending[sock][1] = got
                if chunk and got != line:
                    continue
                if got == line:
                    answered += 1
                else:
                    failures["closed early"] = failures.get("closed early", 0) + 1
            except OSError as error:
                failures[error.strerror] = failures.get(error.strerror, 0) + 1
            selector.unregister(sock)
            sock.close()
            del pending[sock]
    for sock in pending:
        sock.close()
    summary = f"{answered}/{count} answered"
    if failures or pending:
        details = ", ".join(f"{k}: {v}" for k, v in failures.items())
        if pending:
            details += f"{', ' if details else ''}{len(pending)} still waiting after {deadline_s:g} s"
        raise CheckFailed(f"{summary} ({details})")
    return summary


def silent(host, port, deadline_s):
    deadline = time.monotonic() + deadline_s
    started = time.monotonic()
    with connect(host, port) as sock:
        greeting = b""
        while not greeting.endswith(b"\r\n"):
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = sock.recv(1024)
            except socket.timeout:
                raise CheckFailed(f"no greeting within {deadline_s:g} s") from None
            if not chunk:
                raise CheckFailed(f"closed after {greeting!r}")
            greeting += chunk
        waited = time.monotonic() - started
        sock.sendall(b"QUIT\r\n")
        bye = receive_all(sock, deadline + 5)
    if not greeting.startswith(b"220 ") or not bye.startswith(b"221 "):
        raise CheckFailed(f"greeting {greeting!r}, then {bye!r}")
    return f"{greeting.decode().strip()!r} after {waited:.1f} s of silence, then {bye.decode().strip()!r}"


def whoami(host, port, source, line):
    with connect(host, port, source=source) as sock:
        sock.sendall(line.encode() + b"\n")
        reply = receive_all(sock, time.monotonic() + 10)
    return reply.decode("ascii", "replace").strip()


def hold_connections(host, port, count, deadline_s, payload=b"hold\n", in_flight=64):
    """Opens `count` connections, at most `in_flight` handshakes at a time (sslh listens with a
    backlog of 50), each sending `payload` and waiting for the `hold` upstream's "ok": then the
    relay is established end to end. Returns (held sockets, errors by kind); the caller closes."""
    raise_fd_limit()
    selector = selectors.DefaultSelector()
    deadline = time.monotonic() + deadline_s
    held, errors, opening = [], {}, 0
    started = 0
    while len(held) < count and time.monotonic() < deadline:
        while opening < in_flight and started < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.connect_ex((host, port))
            selector.register(sock, selectors.EVENT_WRITE)
            opening += 1
            started += 1
        if opening == 0:
            break
        for key, events in selector.select(timeout=max(0.01, deadline - time.monotonic())):
            sock = key.fileobj
            try:
                if events & selectors.EVENT_WRITE:
                    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if error:
                        raise OSError(error, os.strerror(error))
                    sock.send(payload)
                    selector.modify(sock, selectors.EVENT_READ)
                    continue
                if sock.recv(16) != b"ok\n":
                    raise OSError(0, "closed before ok")
                held.append(sock)
            except OSError as error:
                errors[error.strerror] = errors.get(error.strerror, 0) + 1
                sock.close()
            selector.unregister(sock)
            opening -= 1
    for key in list(selector.get_map().values()):
        key.fileobj.close()
        errors["not established by the deadline"] = errors.get("not established by the deadline", 0) + 1
    selector.close()
    return held, errors


def main(argv):
    commands = {
        "upload": lambda a: upload(a[0], int(a[1]), int(a[2]), a[3]),
        "download": lambda a: download(a[0], int(a[1]), int(a[2])),
        "burst": lambda a: burst(a[0], int(a[1]), int(a[2]), float(a[3])),
        "silent": lambda a: silent(a[0], int(a[1]), float(a[2])),
        "whoami": lambda a: whoami(a[0], int(a[1]), a[2], a[3]),
    }
    if len(argv) < 2 or argv[1] not in commands:
        sys.exit(__doc__)
    try:
        print(commands[argv[1]](argv[2:]))
    except (CheckFailed, OSError) as error:
        print(f"{argv[1]}: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
