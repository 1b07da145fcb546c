"""What the benchmark scripts share: waiting for a server to listen, and percentiles."""
import socket
import time


def wait_listening(host, port, process, timeout=10.0):
    """True once `host`:`port` accepts a connection; False if `process` exits or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def percentile(values, p):
    """The p-th percentile of `values` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]
