#!/usr/bin/env python3
"""quayside against nginx and HAProxy over TLS and HTTP/2, on loopback, in one run.

bench/perf.py measures plain HTTP/1.1; this measures the other ways clients arrive, each
proxy forwarding over HTTP/1.1 with keepalive to the same two nginx `return 200` backends
(bench/nginx-backend.conf), each proxy given two workers/threads:
  tls-h1       HTTPS, HTTP/1.1 keepalive: wrk -t1 -c64
  tls-close    HTTPS, a new connection (and full TLS handshake) per request: wrk -t1 -c64
               with `Connection: close`
  tls-h2       HTTPS, h2 by ALPN: h2load -t1 -c16 -m10 (16 connections, 10 streams each)
  h2c          h2c with prior knowledge: h2load -t1 -c16 -m10
Targets: quayside (--tls-listen), nginx (bench/conf/nginx-protocols.conf), HAProxy
(bench/conf/haproxy-protocols.cfg); a self-signed ECDSA P-256 certificate made with openssl.

Rounds are interleaved (the order of the targets alternates by round); medians are reported
with the range, as requests/s, the ratio to nginx, and proxy CPU per request ((utime+stime of
the proxy's processes over the run) / requests).

Needs: wrk, nginx-extras, haproxy, nghttp2-client (h2load), openssl; `cargo build --release`.
Run: python3 bench/protocols.py   Settings: ROUNDS (default 3), DURATION (seconds, default 5),
CELLS=tls-h1,h2c (only these).
"""
import os
import re
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from perf import HZ, QUAYSIDE, ROOT, cpu_ticks, http_get, rss_kb, spawn, stop_all, work  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "3"))
SECS = int(os.environ.get("DURATION", "5"))
Q_PLAIN, Q_TLS, Q_ADMIN = 18380, 18383, 18381
CELLS = ["tls-h1", "tls-close", "tls-h2", "h2c"]
PORTS = {  # target -> (TLS port, h2c port)
    "quayside": (Q_TLS, Q_PLAIN),
    "nginx": (18590, 18591),
    "haproxy": (18690, 18691),
}


def wrk(url, secs, close=False):
    args = ["wrk", "-t1", "-c64", f"-d{secs}s", url]
    if close:
        args[1:1] = ["-H", "Connection: close"]
    out = subprocess.run(args, capture_output=True, text=True).stdout
    n = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(bad.group(1)) if bad else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), n, errors


def h2load(url, secs):
    out = subprocess.run(["h2load", "-t1", "-c16", "-m10", "-D", str(secs), url],
                         capture_output=True, text=True).stdout
    m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    if not (m and rps):
        sys.exit(f"h2load {url}: could not read its output:\n{out}")
    proto = re.search(r"Application protocol: (\S+)", out)
    if proto and proto.group(1) != "h2" and proto.group(1) != "h2c":
        sys.exit(f"h2load {url}: spoke {proto.group(1)}, not h2")
    done, ok = int(m.group(1)), int(m.group(2))
    return float(rps.group(1)), done, done - ok + int(m.group(3)) + int(m.group(4))


def measure(cell, tls_port, h2c_port, secs=SECS):
    if cell == "tls-h1":
        return wrk(f"https://127.0.0.1:{tls_port}/", secs)
    if cell == "tls-close":
        return wrk(f"https://127.0.0.1:{tls_port}/", secs, close=True)
    if cell == "tls-h2":
        return h2load(f"https://127.0.0.1:{tls_port}/", secs)
    return h2load(f"http://127.0.0.1:{h2c_port}/", secs)


def main():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    cert, key, pem = (os.path.join(work, f) for f in ("cert.pem", "key.pem", "both.pem"))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    open(pem, "w").write(open(cert).read() + open(key).read())
    conf = {}
    for name, src, subst in (("nginx", "nginx-protocols.conf", {"CERT": cert, "KEY": key}),
                             ("haproxy", "haproxy-protocols.cfg", {"PEM": pem})):
        text = open(os.path.join(ROOT, "bench/conf", src)).read()
        for k, v in subst.items():
            text = text.replace(f" {k};", f" {v};").replace(f" {k} ", f" {v} ")
        conf[name] = os.path.join(work, src)
        open(conf[name], "w").write(text)

    spawn(["nginx", "-c", os.path.join(ROOT, "bench/nginx-backend.conf"), "-p", work + "/"])
    q = spawn([QUAYSIDE, "--no-docker", "--workers", "2", "--listen", f"127.0.0.1:{Q_PLAIN}",
               "--admin-listen", f"127.0.0.1:{Q_ADMIN}", "--tls-listen", f"127.0.0.1:{Q_TLS}",
               "--tls-cert", cert, "--tls-key", key, "--state", os.path.join(work, "q-state.json")],
              preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard)))
    targets = {
        "quayside": q,
        "nginx": spawn(["nginx", "-c", conf["nginx"], "-p", work + "/"]),
        "haproxy": spawn(["haproxy", "-f", conf["haproxy"]]),
    }
    time.sleep(1)
    for i, port in ((1, 18081), (2, 18082)):
        assert http_get(Q_ADMIN, f"/add?no={i}&ip=127.0.0.1&port={port}")[0] == 200
    cells = [c for c in CELLS if c in os.environ.get("CELLS", ",".join(CELLS)).split(",")]
    for name in targets:  # a 1-second warm-up each way; each must answer without errors
        for cell in cells:
            rps, n, errors = measure(cell, *PORTS[name], secs=1)
            if errors or not n:
                sys.exit(f"{name} {cell}: {n} requests, {errors} errors in the warm-up")
    results = {}
    for r in range(ROUNDS):
        for cell in cells:
            names = list(targets) if r % 2 == 0 else list(targets)[::-1]
            for name in names:
                p = targets[name]
                t0 = cpu_ticks(p.pid)
                rps, n, errors = measure(cell, *PORTS[name])
                cpu_us = (cpu_ticks(p.pid) - t0) / HZ * 1e6 / max(n, 1)
                results.setdefault((cell, name), []).append((rps, cpu_us, errors))
                print(f"round {r + 1} {cell:9} {name:8} {rps:9.0f} req/s  {cpu_us:6.1f} us CPU/req  "
                      f"errors {errors}", file=sys.stderr, flush=True)

    print(f"\n| client side | target | req/s (median of {ROUNDS}) | range | ÷ nginx | proxy CPU per request | errors |")
    print("|---|---|---|---|---|---|---|")
    for cell in cells:
        base = statistics.median(x[0] for x in results[(cell, "nginx")])
        for name in targets:
            runs = results[(cell, name)]
            rps = statistics.median(x[0] for x in runs)
            cpu = statistics.median(x[1] for x in runs)
            lo, hi = min(x[0] for x in runs), max(x[0] for x in runs)
            print(f"| {cell} | {name} | {rps:,.0f} | {lo:,.0f}–{hi:,.0f} | {rps / base:.2f} | "
                  f"{cpu:.1f} µs | {sum(x[2] for x in runs)} |")
        # Paired by round: the two ran back to back.
        ratios = [a[0] / b[0] for a, b in zip(results[(cell, "quayside")], results[(cell, "nginx")])]
        print(f"|  | quayside ÷ nginx, paired by round | {statistics.median(ratios):.2f} | "
              f"{min(ratios):.2f}–{max(ratios):.2f} |  |  |  |")
    print("\npeak RSS: " + ", ".join(f"{n} {rss_kb(p.pid) / 1024:.1f} MB" for n, p in targets.items()))


if __name__ == "__main__":
    try:
        main()
    finally:
        stop_all()
