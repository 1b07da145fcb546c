#!/usr/bin/env python3
"""One route table, written as the config of each proxy that the forward handler is tested and
measured against: preforkd's `forward` handler (TOML), haproxy 2.6 (TCP mode) and sslh 1.20.

    peerconf.py preforkd|haproxy|sslh --listen ADDR [options] < ROUTES > CONFIG

ROUTES has one route per line, tried in order (first match wins), in shell quoting (`#` starts a
comment, quote a value with spaces):

    NAME UPSTREAM[,UPSTREAM…] [protocol=ssh|tls|http|timeout] [sni=A,B] [alpn=A,B]
                              [host=A,B] [prefix=TEXT] [regex=RE] [send-proxy=v1|v2]

A route with no matching key is the catch-all. Options: --lb ADDR (a second listener that accepts
PROXY v2 from --lb-from CIDRs), --workers N, --threads N (haproxy's nbthread), --probe-timeout S,
--initial-timeout S, --runtime-directory DIR, --log-level L. The benchmark imports the functions.
"""
import os
import argparse
import re
import shlex
import sys

LIST_KEYS = ("sni", "alpn", "host")
KEYS = ("protocol", "prefix", "regex", "send-proxy") + LIST_KEYS


def parse_routes(text):
    routes = []
    for number, line in enumerate(text.splitlines(), 1):
        words = shlex.split(line, comments=True)
        if not words:
            continue
        name, upstream, *pairs = words
        route = {"name": name, "upstream": upstream.split(",")}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or key not in KEYS:
                raise ValueError(f"route line {number}: {pair!r} is not one of {', '.join(KEYS)}=VALUE")
            route[key] = value.split(",") if key in LIST_KEYS else value
        routes.append(route)
    return routes


def toml_string(value):
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def toml_list(values):
    return "[" + ", ".join(toml_string(v) for v in values) + "]"


def preforkd_config(routes, listen, lb=None, lb_from=(), workers=4, probe_timeout=2.0, initial_timeout=None,
                    runtime_directory=None, log_level="info", relay=None):
    """The forward handler's TOML, as fixed by its config contract."""
    listeners = [listen] + ([lb] if lb else [])
    lines = [f"listen = {toml_list(listeners)}", 'handler = "forward"', f"workers = {workers}",
             f"log-level = {toml_string(log_level)}"]
    if os.geteuid() == 0:
        # The peers under test run as root here too; preforkd refuses that unless told.
        lines.append("allow-root = true")
    if any(r.get("protocol") == "timeout" for r in routes):
        # a client that sends nothing must reach a worker, which then routes it on silence
        lines.append("defer-accept = false")
    if initial_timeout is not None:
        lines.append(f"initial-timeout = {initial_timeout:g}")
    if runtime_directory is not None:
        lines.append(f"runtime-directory = {toml_string(runtime_directory)}")
    lines += ["", "[forward]", f"probe-timeout = {probe_timeout:g}", "connect-timeout = 3", "idle-timeout = 300"]
    if relay:
        lines.append(f"relay = {toml_string(relay)}")
    for route in routes:
        lines += ["", "[[forward.route]]", f"name = {toml_string(route['name'])}"]
        for key in ("protocol", "prefix", "regex"):
            if key in route:
                lines.append(f"{key} = {toml_string(route[key])}")
        for key in LIST_KEYS:
            if key in route:
                lines.append(f"{key} = {toml_list(route[key])}")
        lines.append(f"upstream = {toml_list(route['upstream'])}")
        if "send-proxy" in route:
            lines.append(f"send-proxy = {toml_string(route['send-proxy'])}")
    if lb:
        lines += ["", f"[listeners.{toml_string(lb)}]", 'accept-proxy = "v2"', f"accept-proxy-from = {toml_list(lb_from)}"]
    return "\n".join(lines) + "\n"


def haproxy_acl(route):
    """haproxy conditions (ANDed) that select `route`; empty for the catch-all."""
    terms = []
    protocol = route.get("protocol")
    if protocol == "ssh":
        terms.append("{ req.payload(0,4) -m bin 5353482d }")
    elif protocol == "tls":
        terms.append("{ req.ssl_hello_type 1 }")
        exact = [s for s in route.get("sni", []) if not s.startswith("*.")]
        wild = [s[1:] for s in route.get("sni", []) if s.startswith("*.")]
        if exact and wild:
            raise ValueError(f"route {route['name']}: haproxy needs exact and wildcard SNIs in separate routes")
        if exact:
            terms.append("{ req.ssl_sni -i " + " ".join(exact) + " }")
        if wild:
            terms.append("{ req.ssl_sni -m end -i " + " ".join(wild) + " }")
        if route.get("alpn"):
            terms.append("{ req.ssl_alpn " + " ".join(route["alpn"]) + " }")
    elif protocol == "http":
        terms.append("{ req.proto_http }")
        if route.get("host"):
            terms.append("{ req.hdr(host),field(1,:) -i " + " ".join(route["host"]) + " }")
    elif protocol == "timeout":
        terms.append("{ req.len eq 0 }")
    if "prefix" in route:
        prefix = route["prefix"].encode()
        terms.append(f"{{ req.payload(0,{len(prefix)}) -m bin {prefix.hex()} }}")
    if "regex" in route:
        terms.append("{ req.payload(0,0) -m reg " + route["regex"].replace(" ", "\\ ") + " }")
    return " ".join(terms)


def haproxy_config(routes, listen, lb=None, threads=2, probe_timeout=2.0, maxconn=9000, **_):
    send = {"v1": " send-proxy", "v2": " send-proxy-v2"}
    lines = ["global", f"    maxconn {maxconn}", f"    nbthread {threads}", "",
             "defaults", "    mode tcp", "    timeout connect 3s", "    timeout client 300s",
             "    timeout server 300s", ""]
    for name, address, accept in (("main", listen, ""), ("lb", lb, " accept-proxy")):
        if not address:
            continue
        lines += [f"frontend {name}", f"    bind {address}{accept}",
                  f"    tcp-request inspect-delay {int(probe_timeout * 1000)}ms",
                  # decide once a whole ClientHello, or any first bytes of something else, are in;
                  # at the inspect delay the rules run on whatever has arrived (nothing: timeout)
                  "    tcp-request content accept if { req.ssl_hello_type 1 }",
                  "    tcp-request content accept if { req.len gt 0 } !{ req.payload(0,1) -m bin 16 }"]
        for route in routes:
            acl = haproxy_acl(route)
            if acl:
                lines.append(f"    use_backend {route['name']} if {acl}")
            else:
                lines.append(f"    default_backend {route['name']}")
                break
        lines.append("")
    for route in routes:
        lines.append(f"backend {route['name']}")
        for i, upstream in enumerate(route["upstream"]):
            lines.append(f"    server {route['name']}{i} {upstream}{send.get(route.get('send-proxy'), '')}")
        lines.append("")
    return "\n".join(lines)


def libconfig_string(value):
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sslh_config(routes, listen, probe_timeout=2.0, **_):
    """sslh's libconfig file (sslh-fork and sslh-select read the same one)."""
    host, port = listen.rsplit(":", 1)
    lines = ["foreground: true;", "numeric: true;", f"timeout: {max(1, round(probe_timeout))};",
             f"listen: ( {{ host: {libconfig_string(host)}; port: {libconfig_string(port)}; }} );",
             "protocols: ("]
    entries, timeout_route = [], None
    for route in routes:
        if "send-proxy" in route:
            # kept out rather than relayed without the header its upstream requires
            lines.insert(0, f"# route {route['name']} left out: sslh 1.20 cannot send a PROXY header")
            continue
        up_host, up_port = route["upstream"][0].rsplit(":", 1)
        target = f"host: {libconfig_string(up_host)}; port: {libconfig_string(up_port)};"
        protocol = route.get("protocol")
        if protocol == "timeout":
            # sslh 1.20 probes its protocols in order and its "timeout" entry matches any bytes:
            # last, it is reached only through on-timeout
            timeout_route = f'{{ name: "timeout"; {target} }}'
            continue
        if protocol in ("ssh", "http"):
            extra = ""
            if route.get("host"):  # sslh's http probe cannot look at the Host header: a regex can
                pattern = "[Hh]ost: *(" + "|".join(re.escape(h) for h in route["host"]) + ")"
                protocol, extra = "regex", f" regex_patterns: [ {libconfig_string(pattern)} ];"
            entries.append(f"{{ name: {libconfig_string(protocol)}; {target}{extra} }}")
        elif protocol == "tls":
            extra = ""
            if route.get("sni"):
                extra += " sni_hostnames: [ " + ", ".join(libconfig_string(s) for s in route["sni"]) + " ];"
            if route.get("alpn"):
                extra += " alpn_protocols: [ " + ", ".join(libconfig_string(a) for a in route["alpn"]) + " ];"
            entries.append(f'{{ name: "tls"; {target}{extra} }}')
        elif "prefix" in route or "regex" in route:
            pattern = route.get("regex") or "^" + re.escape(route["prefix"])
            entries.append(f'{{ name: "regex"; {target} regex_patterns: [ {libconfig_string(pattern)} ]; }}')
        else:
            entries.append(f'{{ name: "anyprot"; {target} }}')
    if timeout_route:
        entries.append(timeout_route)
    lines.append(",\n".join("    " + e for e in entries))
    lines.append(");")
    if timeout_route:
        lines.append('on-timeout: "timeout";')
    return "\n".join(lines) + "\n"


WRITERS = {"preforkd": preforkd_config, "haproxy": haproxy_config, "sslh": sslh_config}


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("proxy", choices=sorted(WRITERS))
    parser.add_argument("--listen", required=True)
    parser.add_argument("--lb")
    parser.add_argument("--lb-from", action="append", default=[])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--probe-timeout", type=float, default=2.0)
    parser.add_argument("--initial-timeout", type=float)
    parser.add_argument("--runtime-directory")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv[1:])
    try:
        routes = parse_routes(sys.stdin.read())
        options = dict(lb=args.lb, probe_timeout=args.probe_timeout)
        if args.proxy == "preforkd":
            options.update(lb_from=args.lb_from, workers=args.workers, initial_timeout=args.initial_timeout,
                           runtime_directory=args.runtime_directory, log_level=args.log_level)
        elif args.proxy == "haproxy":
            options.update(threads=args.threads)
        sys.stdout.write(WRITERS[args.proxy](routes, args.listen, **options))
    except ValueError as error:
        sys.exit(f"peerconf.py: {error}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
