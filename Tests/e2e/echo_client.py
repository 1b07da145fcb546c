#!/usr/bin/env python3
"""Echo-protocol client for the end-to-end tests: send a message ending in <EOF>, expect the same
bytes back, then the server's close. Loopback only; every mode is bounded in time and count.

HOST may be unix:/path for a unix stream socket (PORT is then ignored).

  echo_client.py HOST PORT once [--size N] [--timeout S]
      one exchange; prints {"ok": bool, "bytes": n, "error": str}
  echo_client.py HOST PORT load [--stop-file F] [--seconds S] [--max N] [--threads K]
                                [--interval I] [--timeout S]
      K threads doing exchanges, each thread pausing I seconds between two, until the file F
      exists, or at the latest S seconds or N exchanges in all; prints {"event": "started"}
      after the first successful exchange, then a summary: {"ok": n, "failed": n,
      "errors": {kind: count}, "first_errors": [...], "seconds": s, "stopped_by": why}
  echo_client.py HOST PORT slow [--delay S] [--timeout S]
      an exchange that stays in flight: sends half a message, prints {"event": "sent"}, waits
      S seconds, sends the rest; prints {"ok": bool, "error": str} (a graceful stop must let it finish)
"""
import argparse
import json
import os
import socket
import sys
import threading
import time

TAG = b"<EOF>"


def connect(host, port, timeout):
    """TCP to HOST:PORT, or a unix stream socket when HOST is unix:/path (PORT is then ignored)."""
    if host.startswith("unix:"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(host[len("unix:"):])
        except BaseException:
            s.close()
            raise
        return s
    return socket.create_connection((host, port), timeout=timeout)


def exchange(host, port, payload, timeout, pause=None, on_half=None):
    """One exchange. Returns None on success, else an error kind string."""
    message = payload + TAG
    try:
        with connect(host, port, timeout) as s:
            s.settimeout(timeout)
            if pause is None:
                s.sendall(message)
            else:
                half = len(payload) // 2
                s.sendall(message[:half])
                if on_half:
                    on_half()
                time.sleep(pause)
                s.sendall(message[half:])
            received = bytearray()
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                received += chunk
                if len(received) > len(message):
                    break
            if bytes(received) != message:
                return "mismatch(%d of %d bytes)" % (len(received), len(message))
            return None
    except FileNotFoundError:
        return "no-such-socket"
    except ConnectionRefusedError:
        return "refused"
    except ConnectionResetError:
        return "reset"
    except BrokenPipeError:
        return "broken-pipe"
    except socket.timeout:
        return "timeout"
    except OSError as error:
        return "oserror(%s)" % (error.strerror or error)


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("mode", choices=["once", "load", "slow"])
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--max", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--delay", type=float, default=1.0)
    parser.add_argument("--stop-file")
    parser.add_argument("--interval", type=float, default=0.002)
    args = parser.parse_args()

    if args.mode == "once":
        payload = (b"0123456789abcdef" * (args.size // 16 + 1))[: args.size]
        error = exchange(args.host, args.port, payload, args.timeout)
        emit({"ok": error is None, "bytes": len(payload) + len(TAG), "error": error or ""})
        return 0 if error is None else 1

    if args.mode == "slow":
        error = exchange(args.host, args.port, b"in-flight-during-stop " * 4, args.timeout,
                         pause=args.delay, on_half=lambda: emit({"event": "sent"}))
        emit({"ok": error is None, "error": error or ""})
        return 0 if error is None else 1

    # load
    lock = threading.Lock()
    state = {"ok": 0, "failed": 0, "started": False, "issued": 0, "stopped_by": "time"}
    errors = {}
    first_errors = []
    start = time.monotonic()
    deadline = start + args.seconds

    def worker(index):
        n = 0
        while time.monotonic() < deadline:
            if args.stop_file and os.path.exists(args.stop_file):
                state["stopped_by"] = "stop-file"
                return
            with lock:
                if state["issued"] >= args.max:
                    state["stopped_by"] = "count"
                    return
                state["issued"] += 1
            n += 1
            payload = b"worker %d exchange %d" % (index, n)
            error = exchange(args.host, args.port, payload, args.timeout)
            with lock:
                if error is None:
                    state["ok"] += 1
                    if not state["started"]:
                        state["started"] = True
                        emit({"event": "started"})
                else:
                    state["failed"] += 1
                    errors[error] = errors.get(error, 0) + 1
                    if len(first_errors) < 5:
                        first_errors.append("%.3fs %s" % (time.monotonic() - start, error))
            if args.interval > 0:
                time.sleep(args.interval)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    emit({"ok": state["ok"], "failed": state["failed"], "errors": errors,
          "first_errors": first_errors, "seconds": round(time.monotonic() - start, 3),
          "stopped_by": state["stopped_by"]})
    return 0 if state["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
