#!/usr/bin/env python3
"""Forwarding proxies side by side on loopback: preforkd's `forward` handler, sslh-fork,
sslh-select and haproxy, with no proxy at all ("direct") as the floor. Writes
out/forward.md and out/forward.json.

Every proxy gets the same route table (Tests/forward/peerconf.py writes it in each one's
language): an ssh route, a TLS SNI route and two prefix routes ahead of the catch-all, whose
upstream is the C pre-fork echo server (build/cprefork, 4 workers). Per peer, in one run:
  - connections/s: the load generator's "echo <EOF>" exchange, one connection per exchange,
    CONCURRENCY clients, ROUNDS interleaved runs of DURATION s (after one short unmeasured run);
  - the proxy's CPU per connection, from a cgroup v2 group of its own (cpu.stat usage_usec before
    and after each run): forked children count wherever they are reaped, which /proc does not do;
  - memory with HOLDS idle relayed connections held open: the sum of RSS and of PSS over every
    process in the proxy's group;
  - relay throughput: BULK_BYTES one way, client -> proxy -> a counting upstream, in MB/s (the
    median of BULK_ROUNDS transfers).
Knobs (environment): DURATION (1.5), WARMUP (0.25), ROUNDS (3), CONCURRENCY (32), WORKERS (4, the upstream's),
PREFORKD_WORKERS (CPUs), PREFORKD_RELAY (splice|copy),
HAPROXY_THREADS (2), HOLDS ("0 500 2000"), BULK_BYTES (1073741824), BULK_ROUNDS (3), PREFORKD,
BASE_PORT (23100).
"""
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
ROOT = os.path.dirname(BENCH)
OUT = os.path.join(BENCH, "out")
FORWARD_TESTS = os.path.join(ROOT, "Tests", "forward")
sys.path.insert(0, FORWARD_TESTS)
sys.dont_write_bytecode = True  # no __pycache__ left in Tests/forward
import clients  # noqa: E402  (Tests/forward: the hold and bulk clients)
import peerconf  # noqa: E402  (Tests/forward: one route table, each proxy's config)
from benchkit import wait_listening  # noqa: E402

DURATION = float(os.environ.get("DURATION", "1.5"))
WARMUP = float(os.environ.get("WARMUP", "0.25"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
CONCURRENCY = int(os.environ.get("CONCURRENCY", "32"))
WORKERS = int(os.environ.get("WORKERS", "4"))  # the upstream's
# preforkd's workers: one per core by default, as haproxy's threads (HAPROXY_THREADS): each
# worker's accepting thread and relay thread then have a core's worth of work to share, and
# neither proxy pays for more runnable threads than there are cores.
PREFORKD_WORKERS = int(os.environ.get("PREFORKD_WORKERS", str(os.cpu_count() or 2)))
# haproxy runs one event loop per thread: one per core (2 here) is its own recommendation, and
# more threads than cores would only make them contend for the cores with the load generator.
HAPROXY_THREADS = int(os.environ.get("HAPROXY_THREADS", "2"))
PREFORKD_RELAY = os.environ.get("PREFORKD_RELAY")  # splice | copy; unset: the handler's default
HOLDS = [int(n) for n in os.environ.get("HOLDS", "0 500 2000").split()]  # 0: the idle baseline
BULK_BYTES = int(os.environ.get("BULK_BYTES", str(1 << 30)))
BULK_ROUNDS = int(os.environ.get("BULK_ROUNDS", "3"))
PREFORKD = os.environ.get("PREFORKD", os.path.join(ROOT, ".build-release", "release", "preforkd"))
LOADGEN = os.path.join(BENCH, "build", "loadgen")
CPREFORK = os.path.join(BENCH, "build", "cprefork")
LOADGEN_CPU = os.environ.get("LOADGEN_CPU", "1")
HOST = "127.0.0.1"
BASE_PORT = int(os.environ.get("BASE_PORT", "23100"))
PROBE_TIMEOUT = 2.0
HOLD_DEADLINE = 60.0

tmpdir = tempfile.mkdtemp(prefix="forward-bench-")
started = []  # Popen objects, each the leader of its own session


def log(message):
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- cgroups
def cgroup2_root():
    """Where cgroup v2 is mounted: /sys/fs/cgroup on a unified system, /sys/fs/cgroup/unified on a
    hybrid one (this machine's)."""
    with open("/proc/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if fields[2] == "cgroup2":
                return fields[1]
    return None


class Cgroup:
    """A cgroup v2 group of one peer's processes. cpu.stat's usage_usec exists with no controller
    enabled, and counts every task that ran in the group, exited children included."""

    def __init__(self, parent, name):
        self.path = os.path.join(parent, name)
        os.mkdir(self.path)

    def enter(self):
        """Moves the calling process in (called between fork and exec: everything the peer forks
        later is born inside)."""
        with open(os.path.join(self.path, "cgroup.procs"), "w") as procs:
            procs.write(str(os.getpid()))

    def cpu_usec(self):
        with open(os.path.join(self.path, "cpu.stat")) as stat:
            for line in stat:
                key, value = line.split()
                if key == "usage_usec":
                    return int(value)
        return 0

    def pids(self):
        with open(os.path.join(self.path, "cgroup.procs")) as procs:
            return [int(line) for line in procs if line.strip()]

    def memory_kib(self):
        """(sum of RSS, sum of PSS, process count) over the group, from smaps_rollup."""
        rss = pss = count = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/smaps_rollup") as rollup:
                    for line in rollup:
                        if line.startswith("Rss:"):
                            rss += int(line.split()[1])
                        elif line.startswith("Pss:"):
                            pss += int(line.split()[1])
                count += 1
            except OSError:
                pass  # exited meanwhile
        return rss, pss, count

    def remove(self):
        try:
            with open(os.path.join(self.path, "cgroup.kill"), "w") as kill:
                kill.write("1")
        except OSError:
            pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.rmdir(self.path)
                return
            except OSError:
                time.sleep(0.05)  # the killed tasks are still leaving the group
        log(f"could not remove {self.path}")


# ---------------------------------------------------------------- processes
def spawn(name, argv, cgroup=None, env=None):
    def child_setup():
        if cgroup:
            cgroup.enter()

    log_file = open(os.path.join(tmpdir, f"{name}.log"), "ab")
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                               start_new_session=True, env=env, preexec_fn=child_setup)
    started.append(process)
    return process


def stop(process):
    for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue
    if process in started:
        started.remove(process)




def wait_ready(notify, process, timeout=20.0):
    """READY=1 on preforkd's NOTIFY_SOCKET: every worker waits in accept."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        notify.settimeout(max(0.01, min(0.2, deadline - time.monotonic())))
        try:
            if b"READY=1" in notify.recv(4096).split(b"\n"):
                return True
        except socket.timeout:
            continue
    return False


# ---------------------------------------------------------------- peers
def route_table(ports):
    """The routes every proxy gets. The load hits the catch-all, after an ssh, a TLS SNI and two
    prefix routes; "hold" and "bulk:" lead to the upstreams of the memory and throughput runs."""
    return peerconf.parse_routes(f"""
ssh     {HOST}:{ports['unused']} protocol=ssh
site    {HOST}:{ports['unused']} protocol=tls sni=a.example.org
hold    {HOST}:{ports['hold']} prefix=hold
bulk    {HOST}:{ports['count']} prefix=bulk:
default {HOST}:{ports['echo']}
""")


def preforkd_status():
    """(usable, reason). While the forward handler does not exist, preforkd is skipped; once it
    does (its --help names it), a config it refuses is an error."""
    if not os.access(PREFORKD, os.X_OK):
        return False, f"{PREFORKD} is not built (make release, or set PREFORKD)"
    help_text = subprocess.run([PREFORKD, "--help"], capture_output=True, text=True, timeout=10).stdout
    probe = os.path.join(tmpdir, "check.toml")
    with open(probe, "w") as f:
        f.write(peerconf.preforkd_config(route_table({"unused": 1, "hold": 2, "count": 3, "echo": 4}),
                                         f"{HOST}:1", workers=WORKERS))
    check = subprocess.run([PREFORKD, "--config", probe, "--check-config"], capture_output=True, text=True,
                           timeout=10)
    if check.returncode == 0:
        return True, ""
    reason = (check.stderr.strip().splitlines() or ["--check-config failed"])[-1]
    if len(reason) > 160:  # the refused table is echoed whole: keep its start and the verdict
        reason = reason[:80] + " … " + reason[-60:]
    if "forward" in help_text:
        raise SystemExit(f"preforkd has the forward handler but refuses the benchmark's config: {reason}")
    return False, f"the forward handler is not in this preforkd yet (--check-config: {reason})"


def start_proxy(kind, port, routes, cgroup):
    """Starts one proxy in its cgroup; returns its Popen, or None if it did not come up."""
    listen = f"{HOST}:{port}"
    config = os.path.join(tmpdir, f"{kind}.conf")
    env = None
    if kind == "preforkd":
        text = peerconf.preforkd_config(routes, listen, workers=PREFORKD_WORKERS, probe_timeout=PROBE_TIMEOUT,
                                        runtime_directory=os.path.join(tmpdir, "run"), log_level="warning",
                                        relay=PREFORKD_RELAY)
        argv = [PREFORKD, "--config", config]
        notify_path = os.path.join(tmpdir, "notify.sock")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(notify_path)
        env = dict(os.environ, NOTIFY_SOCKET=notify_path)
    elif kind == "haproxy":
        text = peerconf.haproxy_config(routes, listen, threads=HAPROXY_THREADS, probe_timeout=PROBE_TIMEOUT)
        argv = ["haproxy", "-db", "-f", config]
    else:  # sslh (sslh-fork) or sslh-select: the same config file
        text = peerconf.sslh_config(routes, listen, probe_timeout=PROBE_TIMEOUT)
        argv = [f"/usr/sbin/{kind}", f"-F{config}"]
    with open(config, "w") as f:
        f.write(text)
    process = spawn(kind, argv, cgroup, env)
    if kind == "preforkd":
        ready = wait_ready(notify, process)
        notify.close()
    else:
        ready = wait_listening(HOST, port, process)
    if not ready:
        log(f"{kind} did not come up; its log: {tail(kind)}")
        stop(process)
        return None
    return process


def tail(name, lines=5):
    try:
        with open(os.path.join(tmpdir, f"{name}.log"), errors="replace") as f:
            return " | ".join(f.read().strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------- measurements
def run_load(port, label, duration):
    argv = ["taskset", "-c", LOADGEN_CPU, LOADGEN, "--host", HOST, "--port", str(port), "--scenario", "conn",
            "--concurrency", str(CONCURRENCY), "--duration", str(duration), "--warmup", "0",
            "--max-exchanges", "2000000", "--timeout-ms", "5000", "--label", label]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30)
    if out.returncode != 0:
        log(f"  {label}: load generator failed: {out.stderr.strip()}")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_connections(peer, port):
    """One measured run. The load generator measures from its start (no warm-up inside the run, so
    its window is the cgroup's): the proxy's CPU over the run, per exchange."""
    cpu_before = peer["cgroup"].cpu_usec() if peer["cgroup"] else None
    result = run_load(port, f"{peer['name']}/conn c{CONCURRENCY}", DURATION)
    if result and peer["cgroup"]:
        used = peer["cgroup"].cpu_usec() - cpu_before
        result["proxy_cpu_us_per_connection"] = used / result["exchanges"] if result["exchanges"] else None
    return result


def measure_holds(peer, port, count):
    held, errors = clients.hold_connections(HOST, port, count, HOLD_DEADLINE)
    try:
        time.sleep(0.2)  # let the last relays' buffers settle before reading memory
        alive = peer["process"] is None or peer["process"].poll() is None
        rss, pss, processes = peer["cgroup"].memory_kib() if peer["cgroup"] and alive else (None, None, 0)
        return dict(wanted=count, held=len(held), errors=errors, rss_kib=rss, pss_kib=pss,
                    processes=processes, alive=alive)
    finally:
        for sock in held:
            sock.close()


def measure_throughput(peer, port):
    """BULK_ROUNDS transfers of BULK_BYTES; the median rate, and the proxy's CPU per transfer."""
    rates, cpus, counted = [], [], BULK_BYTES
    for _ in range(BULK_ROUNDS):
        cpu_before = peer["cgroup"].cpu_usec() if peer["cgroup"] else None
        try:
            counted, seconds = clients.send_counted(HOST, port, BULK_BYTES)
        except (OSError, clients.CheckFailed) as error:
            return dict(error=str(error))
        if counted != BULK_BYTES:
            break
        rates.append(BULK_BYTES / seconds / 1e6)
        cpus.append((peer["cgroup"].cpu_usec() - cpu_before) / 1e6 if peer["cgroup"] else None)
    return dict(bytes=BULK_BYTES, counted=counted, transfers=len(rates), mb_per_s=median(rates),
                mb_per_s_each=[round(r) for r in rates], proxy_cpu_s=median(cpus))


def settle_after_holds(cgroup, timeout=10.0):
    """After the held connections close, a fork-per-connection proxy's children take a moment to
    exit: wait for the group to shrink back before the next measurement."""
    if not cgroup:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(cgroup.pids()) > max(WORKERS, PREFORKD_WORKERS) + 2:
        time.sleep(0.05)


# ---------------------------------------------------------------- main
def on_signal(sig, _frame):
    raise SystemExit(128 + sig)  # unwinds through main's finally: every peer stopped, groups removed


def main():
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, on_signal)
    os.makedirs(OUT, exist_ok=True)
    clients.raise_fd_limit()
    for binary, how in ((LOADGEN, "make -C Benchmarks build"), (CPREFORK, "make -C Benchmarks build")):
        if not os.access(binary, os.X_OK):
            log(f"missing {binary}: build it first ({how})")
            return 2
    for tool in ("haproxy", "sslh", "sslh-select"):
        if not any(os.access(os.path.join(d, tool), os.X_OK) for d in ("/usr/sbin", "/usr/bin")):
            log(f"missing {tool}: scripts/install-deps haproxy sslh")
            return 2
    root = cgroup2_root()
    if not root or not os.access(root, os.W_OK):
        log(f"cgroup v2 is not mounted writable here ({root}): the proxies' CPU and memory cannot be "
            "measured per group (run as root)")
        return 2
    parent = os.path.join(root, f"forward-bench-{os.getpid()}")
    os.mkdir(parent)
    t_start = time.monotonic()
    load_start = open("/proc/loadavg").read().split()[:3]
    peers, cgroups = [], []
    failed = []  # what makes the run fail once the report is written
    try:
        upstream_ports = os.path.join(tmpdir, "upstream-ports")
        spawn("upstreams", [sys.executable, os.path.join(FORWARD_TESTS, "upstreams.py"), "--ready-file",
                            upstream_ports, "hold", "count"])
        echo_port = BASE_PORT
        echo = spawn("cprefork", [CPREFORK, "--listen", f"{HOST}:{echo_port}", "--workers", str(WORKERS)])
        if not wait_listening(HOST, echo_port, echo):
            log(f"the echo upstream did not start: {tail('cprefork')}")
            return 2
        deadline = time.monotonic() + 10
        while not os.path.exists(upstream_ports) and time.monotonic() < deadline:
            time.sleep(0.02)
        ports = {mode: int(port) for mode, port in (line.split() for line in open(upstream_ports))}
        ports["echo"] = echo_port
        ports["unused"] = BASE_PORT + 99  # routes the load never takes
        routes = route_table(ports)

        peers.append(dict(name="direct", process=None, cgroup=None, port=echo_port,
                          hold_port=ports["hold"], bulk_port=ports["count"], note="no proxy"))
        usable, reason = preforkd_status()
        kinds = (["preforkd"] if usable else []) + ["sslh-fork", "sslh-select", "haproxy"]
        skipped = {} if usable else {"preforkd": reason}
        if not usable:
            log(f"SKIP preforkd: {reason}")
        notes = {"preforkd": f"forward handler, {PREFORKD_WORKERS} workers", "sslh-fork": "sslh 1.20, a process per connection",
                 "sslh-select": "sslh 1.20, one select() loop", "haproxy": f"2.6, TCP mode, nbthread {HAPROXY_THREADS}"}
        for i, kind in enumerate(kinds, 1):
            port = BASE_PORT + i
            cgroup = Cgroup(parent, kind)
            cgroups.append(cgroup)
            process = start_proxy("sslh" if kind == "sslh-fork" else kind, port, routes, cgroup)
            if process is None:
                skipped[kind] = "did not start: " + tail("sslh" if kind == "sslh-fork" else kind, 2)
                failed.append(f"{kind} did not start")
                continue
            peers.append(dict(name=kind, process=process, cgroup=cgroup, port=port, hold_port=port,
                              bulk_port=port, note=notes[kind]))

        results = {p["name"]: dict(runs=[], holds=[], throughput=None) for p in peers}
        for peer in peers:  # warm every path once, unmeasured
            run_load(peer["port"], f"{peer['name']}/warm-up", WARMUP)
        for round_index in range(ROUNDS):
            order = peers if round_index % 2 == 0 else peers[::-1]
            for peer in order:
                if peer["process"] is not None and peer["process"].poll() is not None:
                    results[peer["name"]]["runs"].append(None)
                    continue
                r = measure_connections(peer, peer["port"])
                results[peer["name"]]["runs"].append(r)
                if r:
                    cpu = r.get("proxy_cpu_us_per_connection")
                    log(f"  {peer['name']:12s} r{round_index + 1} {r['exchanges_per_s']:>9,.0f} conn/s  "
                        f"errors {r['errors_total']:>5}  proxy CPU {cpu if cpu is None else round(cpu, 1)} µs/conn")
        for peer in peers:
            if peer["process"] is not None and peer["process"].poll() is not None:
                continue
            t = measure_throughput(peer, peer["bulk_port"])
            results[peer["name"]]["throughput"] = t
            log(f"  {peer['name']:12s} bulk {t}")
            for count in HOLDS:
                if peer["process"] is not None and peer["process"].poll() is not None:
                    results[peer["name"]]["holds"].append(dict(wanted=count, held=0, alive=False, errors={}))
                    continue
                h = measure_holds(peer, peer["hold_port"], count)
                results[peer["name"]]["holds"].append(h)
                log(f"  {peer['name']:12s} hold {count}: {h}")
                settle_after_holds(peer["cgroup"])
        # sslh-select dying past ~510 relays is what it does; preforkd or haproxy dying is a finding
        for peer in peers:
            if peer["name"] in ("preforkd", "haproxy") and peer["process"].poll() is not None:
                failed.append(f"{peer['name']} died during the run (exit {peer['process'].returncode})")
    finally:
        for process in list(started):
            stop(process)
        for cgroup in cgroups:
            cgroup.remove()
        try:
            os.rmdir(parent)
        except OSError as error:
            log(f"could not remove {parent}: {error}")
    wall = time.monotonic() - t_start
    write_reports(peers, results, skipped, wall, load_start)
    for failure in failed:
        log(f"FAILED: {failure}")
    return 1 if failed else 0


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=0, unit=""):
    if value is None:
        return "–"
    return f"{value:,.{digits}f}{unit}"


def write_reports(peers, results, skipped, wall, load_start):
    rows = []
    for peer in peers:
        r = results[peer["name"]]
        runs = [x for x in r["runs"] if x]
        errors = {}
        for run in runs:
            for kind, n in run["errors"].items():
                if n:
                    errors[kind] = errors.get(kind, 0) + n
        exchanges = sum(x["exchanges"] for x in runs)
        rows.append(dict(peer=peer["name"], note=peer["note"],
                         conn_per_s=median([x["exchanges_per_s"] for x in runs]),
                         cpu_us_per_conn=median([x.get("proxy_cpu_us_per_connection") for x in runs]),
                         exchanges=exchanges, errors=errors,
                         lost_percent=100.0 * sum(errors.values()) / (exchanges + sum(errors.values()))
                         if exchanges else None,
                         holds=r["holds"], throughput=r["throughput"], runs=r["runs"]))
    lines = ["# Forwarding proxies on loopback: preforkd `forward` vs sslh vs haproxy\n",
             f"{time.strftime('%Y-%m-%d %H:%M:%S')} · {os.cpu_count()} CPUs · {CONCURRENCY} concurrent clients, "
             f"one 64-byte `<EOF>` echo per connection · {ROUNDS} interleaved runs of {DURATION:g} s per peer "
             f"(median) · upstream: `cprefork`, {WORKERS} workers · routes: ssh, TLS SNI, 2 prefixes, then the "
             "catch-all the load takes\n",
             "> The load generator is pinned to CPU " + LOADGEN_CPU + "; proxies and upstream are not. On 2 cores "
             "client, proxy and upstream share the machine, so connections/s is bounded by all three: the "
             "proxy's **CPU per connection** (usage_usec of its own cgroup v2 group, forked children "
             "included) is the fairer figure. Run-to-run noise is ±15–20 %.\n",
             "## Connections\n",
             "| peer | what | conn/s | errors (lost %) | proxy CPU µs/conn |",
             "|---|---|---:|---:|---:|"]
    for row in rows:
        errs = str(sum(row["errors"].values()))
        if row["errors"]:
            errs += " (" + ", ".join(f"{k} {v}" for k, v in row["errors"].items()) + f"; {row['lost_percent']:.1f} %)"
        lines.append(f"| {row['peer']} | {row['note']} | {fmt(row['conn_per_s'])} | {errs} | "
                     f"{fmt(row['cpu_us_per_conn'], 1) if row['peer'] != 'direct' else '–'} |")
    for name, reason in skipped.items():
        lines.append(f"| {name} | skipped: {reason} | – | – | – |")
    lines += ["\n## Memory with idle relayed connections held open\n",
              "Sum over every process in the proxy's cgroup (smaps_rollup): RSS counts shared pages in each "
              "process, PSS shares them out. Socket buffers are kernel memory, in neither.\n",
              "| peer | " + " | ".join(f"{n} relays: held · RSS MB · PSS MB · processes" for n in HOLDS) + " |",
              "|---|" + "---:|" * len(HOLDS)]
    for row in rows:
        if row["peer"] == "direct":
            continue
        cells = []
        for h in row["holds"]:
            if not h.get("alive", True) and not h.get("rss_kib"):
                cells.append(f"{h['held']}/{h['wanted']} · proxy died")
                continue
            text = (f"{h['held']}/{h['wanted']} · {fmt((h.get('rss_kib') or 0) / 1024, 1)} · "
                    f"{fmt((h.get('pss_kib') or 0) / 1024, 1)} · {h.get('processes', '–')}")
            if h.get("errors"):
                text += " (" + ", ".join(f"{k} {v}" for k, v in h["errors"].items()) + ")"
            if not h.get("alive", True):
                text += ", proxy died"
            cells.append(text)
        lines.append(f"| {row['peer']} | " + " | ".join(cells) + " |")
    lines += [f"\n## Relay throughput: {BULK_BYTES / (1 << 30):g} GiB one way (client → proxy → counting upstream)\n",
              f"Median of {BULK_ROUNDS} transfers; the proxy's CPU seconds per transfer.\n",
              "| peer | MB/s | vs direct | proxy CPU s |", "|---|---:|---:|---:|"]
    direct_rate = next((r["throughput"].get("mb_per_s") for r in rows if r["peer"] == "direct" and r["throughput"]),
                       None)
    for row in rows:
        t = row["throughput"] or {}
        rate = t.get("mb_per_s")
        ratio = rate / direct_rate if rate and direct_rate else None
        shown = fmt(rate) if rate else (t.get("error") or f"counted {t.get('counted')} of {t.get('bytes')}")
        lines.append(f"| {row['peer']} | {shown} | {fmt(ratio, 2, '×')} | "
                     f"{fmt(t.get('proxy_cpu_s'), 2) if row['peer'] != 'direct' else '–'} |")
    load_end = open("/proc/loadavg").read().split()[:3]
    lines.append(f"\nMeasured part of the run: {wall:.0f} s. Load average before: {' '.join(load_start)}, after: "
                 f"{' '.join(load_end)}.\n")
    text = "\n".join(lines)
    with open(os.path.join(OUT, "forward.md"), "w") as f:
        f.write(text)
    print(text)
    doc = dict(config=dict(duration_s=DURATION, warmup_s=WARMUP, rounds=ROUNDS, concurrency=CONCURRENCY,
                           workers=WORKERS, preforkd_workers=PREFORKD_WORKERS, haproxy_threads=HAPROXY_THREADS, holds=HOLDS, bulk_bytes=BULK_BYTES,
                           loadgen_cpu=LOADGEN_CPU, cpus=os.cpu_count(), preforkd=PREFORKD),
               peers=rows, skipped=skipped, wall_s=round(wall, 1), loadavg_before=load_start, loadavg_after=load_end)
    with open(os.path.join(OUT, "forward.json"), "w") as f:
        json.dump(doc, f, indent=1)


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        for p in list(started):
            stop(p)
        subprocess.run(["rm", "-rf", tmpdir], check=False)
