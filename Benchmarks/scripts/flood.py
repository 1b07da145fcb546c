#!/usr/bin/env python3
"""The silent-flood figure: preforkd with 4 workers and a 10 s initial timeout, 1,000 loopback
connections that send nothing and stay open, and meanwhile 100 echo exchanges by a well-behaved
client, one after another. Prints each exchange's latency percentiles, when the server closed the
silent connections, and how many log lines the flood cost.

usage: flood.py PREFORKD [--silent 1000] [--exchanges 100] [--defer-accept on|off]
Bounded: every socket has a timeout, the whole run a deadline.
"""
import argparse, os, resource, select, signal, socket, subprocess, sys, tempfile, time
from benchkit import percentile

def exchange(port, message, timeout):
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(message)
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return time.monotonic() - start, data == message


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("preforkd")
    parser.add_argument("--silent", type=int, default=1000)
    parser.add_argument("--exchanges", type=int, default=100)
    parser.add_argument("--defer-accept", choices=["on", "off"], default="on")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.silent + 256)), hard))
    log = tempfile.NamedTemporaryFile(prefix="preforkd-flood-", suffix=".log", delete=False)
    flag = "--defer-accept" if args.defer_accept == "on" else "--no-defer-accept"
    server = subprocess.Popen(
        [args.preforkd, "--listen", "127.0.0.1:0", "--workers", "4", "--initial-timeout", "10", flag]
        # As root, preforkd serves as root only when told (what it runs as changes nothing here).
        + (["--allow-root"] if os.geteuid() == 0 else []),
        stderr=log, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        port = None
        while port is None and time.monotonic() < deadline:
            time.sleep(0.05)
            for line in open(log.name, errors="replace"):
                if "Listening on 127.0.0.1:" in line:
                    port = int(line.split("Listening on 127.0.0.1:")[1].split()[0])
        assert port, "preforkd did not start"
        time.sleep(0.3)
        silent = []
        for _ in range(args.silent):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.setblocking(False)
            silent.append(s)
        flood_start = time.monotonic()
        latencies, failed = [], 0
        for i in range(args.exchanges):
            try:
                seconds, ok = exchange(port, b"exchange %d<EOF>" % i, timeout=2)
                latencies.append(seconds)
                failed += 0 if ok else 1
            except OSError:
                failed += 1
        # When did the server close the silent ones?
        open_ones = {s.fileno(): s for s in silent}
        closed_at = []
        while open_ones and time.monotonic() < deadline:
            ready, _, _ = select.select(list(open_ones), [], [], 1.0)
            for fd in ready:
                try:
                    data = open_ones[fd].recv(1)
                except OSError:
                    data = b""
                if not data:
                    closed_at.append(time.monotonic() - flood_start)
                    open_ones.pop(fd).close()
        lines = sum(1 for line in open(log.name, errors="replace") if "initial read timed out" in line)
        ms = [x * 1000 for x in latencies]
        print(f"defer-accept {args.defer_accept}: {args.silent} silent connections, {args.exchanges} exchanges")
        if ms:
            print(f"  exchange latency ms: p50 {percentile(ms, 50):.2f}  p99 {percentile(ms, 99):.2f}  "
                  f"max {max(ms):.2f}  ({len(ms)} completed, {failed} failed)")
        else:
            print(f"  no exchange completed ({failed} failed)")
        if closed_at:
            print(f"  silent connections closed by the server: {len(closed_at)} of {args.silent}, "
                  f"between {min(closed_at):.1f} s and {max(closed_at):.1f} s after they connected")
        print(f"  log lines about them: {lines}")
        return 0 if failed == 0 and len(closed_at) == args.silent else 1
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=40)
        except subprocess.TimeoutExpired:
            server.kill()
        os.unlink(log.name)

if __name__ == "__main__":
    sys.exit(main())
