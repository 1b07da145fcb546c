#!/usr/bin/env python3
"""results.json -> chart.svg: exchanges/s and server CPU µs/exchange per peer and scenario.
Standard library only. usage: chart.py results.json chart.svg"""
import json
import math
import sys
from xml.sax.saxutils import escape

COLORS = ["#d62728", "#1f77b4", "#2ca02c", "#98df8a", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
FIXED = {"preforkd": "#d62728", "c-prefork": "#1f77b4", "nio": "#2ca02c", "nio-stock-echo": "#98df8a",
         "socat": "#9467bd", "tcpserver+cat": "#8c564b", "xinetd-echo": "#e377c2"}


def color(peer, i):
    return FIXED.get(peer, COLORS[i % len(COLORS)])


def panel(out, x0, y0, w, h, title, scens, peers, value, log_scale, unit):
    vals = [value(p, s) for s in scens for p in peers if value(p, s)]
    if not vals:
        return
    vmax = max(vals)
    vmin = min(vals)
    if log_scale:
        lo = 10 ** math.floor(math.log10(vmin))
        hi = 10 ** math.ceil(math.log10(vmax))

        def scale(v):
            return (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        ticks = [lo * 10 ** i for i in range(int(round(math.log10(hi / lo))) + 1)]
    else:
        step = 10 ** math.floor(math.log10(vmax))
        hi = math.ceil(vmax / step) * step

        def scale(v):
            return v / hi
        ticks = [hi * i / 4 for i in range(5)]
    out.append(f'<text x="{x0}" y="{y0 - 8}" font-size="14" font-weight="bold">{escape(title)}</text>')
    for t in ticks:
        ty = y0 + h - scale(t) * h
        out.append(f'<line x1="{x0}" x2="{x0 + w}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{x0 - 4}" y="{ty + 4:.1f}" font-size="10" text-anchor="end">{t:,.0f}</text>')
    gw = w / max(1, len(scens))
    bw = (gw - 16) / max(1, len(peers))
    for si, s in enumerate(scens):
        gx = x0 + si * gw + 8
        out.append(f'<text x="{gx + (gw - 16) / 2:.1f}" y="{y0 + h + 16}" font-size="12" '
                   f'text-anchor="middle">{escape(s)}</text>')
        for pi, p in enumerate(peers):
            v = value(p, s)
            if not v:
                continue
            bh = max(1.0, scale(v) * h)
            bx = gx + pi * bw
            out.append(f'<rect x="{bx:.1f}" y="{y0 + h - bh:.1f}" width="{bw - 2:.1f}" height="{bh:.1f}" '
                       f'fill="{color(p, pi)}"><title>{escape(p)} {escape(s)}: {v:,.1f} {unit}</title></rect>')
            out.append(f'<text x="{bx + (bw - 2) / 2:.1f}" y="{y0 + h - bh - 3:.1f}" font-size="9" '
                       f'text-anchor="middle">{v:,.0f}</text>')
    out.append(f'<line x1="{x0}" x2="{x0 + w}" y1="{y0 + h}" y2="{y0 + h}" stroke="#333"/>')


def main():
    doc = json.load(open(sys.argv[1]))
    cells = {(c["peer"], c["scenario"]): c for c in doc["cells"]}
    peers = doc["peers"]
    scens = doc["config"]["scenarios"]
    W, H = 1000, 700
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif">',
           f'<rect width="{W}" height="{H}" fill="white"/>']
    panel(out, 80, 50, 880, 230, "exchanges/s (higher is better)", scens, peers,
          lambda p, s: (cells.get((p, s)) or {}).get("xps"), False, "/s")
    panel(out, 80, 360, 880, 230, "server CPU µs per exchange (lower is better, log scale)", scens, peers,
          lambda p, s: (cells.get((p, s)) or {}).get("cpu"), True, "µs")
    lx = 80
    for pi, p in enumerate(peers):
        out.append(f'<rect x="{lx}" y="{H - 60}" width="12" height="12" fill="{color(p, pi)}"/>')
        out.append(f'<text x="{lx + 16}" y="{H - 50}" font-size="12">{escape(p)}</text>')
        lx += 16 + 8 * len(p) + 24
    out.append(f'<text x="80" y="{H - 20}" font-size="11" fill="#555">2 cores shared by client (pinned) and server; '
               f'medians of interleaved rounds; see results.md for caveats.</text>')
    out.append("</svg>")
    with open(sys.argv[2], "w") as f:
        f.write("\n".join(out))


if __name__ == "__main__":
    main()
