#!/usr/bin/env python3
"""The held-relays figure of the forward handler: preforkd with 4 workers forwarding to a
loopback echo upstream, N relayed connections opened and left idle, then 100 new connections
routed and answered one after another (latency percentiles), then every held connection poked
(each must echo its poke), then the memory of preforkd's processes (RSS and PSS summed).

usage: relay_hold.py PREFORKD [--relays 2000] [--probes 100] [--workers 4] [--relay splice|copy]
Bounded: every socket has a timeout, the whole run a deadline. Exits 1 if any exchange fails.
"""
import argparse, os, resource, selectors, socket, subprocess, sys, tempfile, time
from benchkit import percentile

UPSTREAM = r"""
import asyncio, sys
async def serve(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    writer.close()
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


def wait_ready(notify, deadline):
    """Waits for READY=1; returns the port from the STATUS= line sent with or after it."""
    notify.settimeout(max(0.1, deadline - time.monotonic()))
    ready = False
    while time.monotonic() < deadline:
        datagram = notify.recv(4096).decode(errors="replace")
        ready = ready or "READY=1" in datagram
        if ready and "127.0.0.1:" in datagram:
            return int(datagram.split("127.0.0.1:")[1].split()[0].rstrip(",;"))
    raise SystemExit("preforkd did not report READY=1 and its address")


def memory_of(pids):
    rss = pss = 0
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/smaps_rollup"):
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            pass
    return rss, pss


def children(pid):
    try:
        return [int(p) for p in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []




def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("preforkd")
    parser.add_argument("--relays", type=int, default=2000)
    parser.add_argument("--probes", type=int, default=100)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--relay", choices=["splice", "copy"], default="splice")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 2 * args.relays + 512)), hard))
    deadline = time.monotonic() + 180
    directory = tempfile.mkdtemp(prefix="preforkd-hold-")
    upstream = subprocess.Popen([sys.executable, "-c", UPSTREAM], stdout=subprocess.PIPE, text=True)
    server = None
    held = []
    try:
        upstream_port = int(upstream.stdout.readline())
        config = os.path.join(directory, "forward.toml")
        with open(config, "w") as f:
            f.write(f"""listen = ["127.0.0.1:0"]
workers = {args.workers}
handler = "forward"
log-level = "warning"
[forward]
relay = "{args.relay}"
[[forward.route]]
name = "echo"
upstream = ["127.0.0.1:{upstream_port}"]
""")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(os.path.join(directory, "notify.sock"))
        env = dict(os.environ, NOTIFY_SOCKET=notify.getsockname(), RUNTIME_DIRECTORY=directory)
        log = open(os.path.join(directory, "stderr.log"), "w")
        # As root, preforkd serves as root only when told (what it runs as changes nothing here).
        root = ["--allow-root"] if os.geteuid() == 0 else []
        server = subprocess.Popen([args.preforkd, "--config", config] + root, env=env, stderr=log)
        port = wait_ready(notify, deadline)
        idle_rss, idle_pss = memory_of([server.pid] + children(server.pid))

        # Open the relays: each sends its name and reads it back, then stays idle.
        for index in range(args.relays):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
            except OSError as error:
                raise SystemExit(f"relay {index}: connect to port {port}: {error}; log: {open(log.name).read()[-2000:]}")
            message = b"hold %d;" % index
            s.sendall(message)
            got = b""
            while len(got) < len(message):
                chunk = s.recv(64)
                if not chunk:
                    raise SystemExit(f"relay {index} closed while opening")
                got += chunk
            assert got == message, (got, message)
            held.append(s)
        opened = time.monotonic()

        # New connections, one after another, while the relays are held.
        latencies, failed = [], 0
        for index in range(args.probes):
            start = time.monotonic()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                    message = b"probe %d" % index
                    s.sendall(message)
                    got = b""
                    while len(got) < len(message):
                        chunk = s.recv(64)
                        if not chunk:
                            break
                        got += chunk
                    failed += got != message
            except OSError:
                failed += 1
            latencies.append((time.monotonic() - start) * 1000)

        # Poke every held relay; each must echo its poke.
        selector = selectors.DefaultSelector()
        for index, s in enumerate(held):
            s.setblocking(False)
            s.send(b"poke %d" % index)
            selector.register(s, selectors.EVENT_READ, (index, b""))
        answered = 0
        while answered < len(held) and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=1):
                index, got = key.data
                chunk = key.fileobj.recv(64)
                got += chunk
                expected = b"poke %d" % index
                if not chunk or len(got) >= len(expected):
                    answered += 1
                    failed += got != expected
                    selector.unregister(key.fileobj)
                else:
                    selector.modify(key.fileobj, selectors.EVENT_READ, (index, got))
        failed += len(held) - answered
        pids = [server.pid] + children(server.pid)
        rss, pss = memory_of(pids)
        print(f"relay method: {args.relay}; {args.workers} workers; {args.relays} relays held "
              f"(opened in {opened - (deadline - 180):.1f} s)")
        print(f"new connections while held: {args.probes}, p50 {percentile(latencies, 50):.2f} ms, "
              f"p99 {percentile(latencies, 99):.2f} ms, max {max(latencies):.2f} ms")
        print(f"held relays poked: {answered} of {len(held)} answered")
        print(f"preforkd memory ({len(pids)} processes): idle RSS {idle_rss / 1024:.1f} MiB, "
              f"PSS {idle_pss / 1024:.1f} MiB; with the relays RSS {rss / 1024:.1f} MiB, PSS {pss / 1024:.1f} MiB")
        print(f"failed exchanges: {failed}")
        return 1 if failed else 0
    finally:
        for s in held:
            s.close()
        if server:
            server.terminate()
            server.wait(timeout=30)
        upstream.kill()
        upstream.wait()


if __name__ == "__main__":
    sys.exit(main())
