#!/usr/bin/env python3
"""quayside against nginx and HAProxy on loopback, in one run (issue 5's benchmark).

Targets, all forwarding to the same two nginx `return 200` backends (1 worker each) and each
proxy given two workers/threads:
  direct        the backend itself (the ceiling)
  quayside      release build, tokio with 2 worker threads
  nginx-static  upstream block + keepalive (bench/conf/nginx-static.conf)
  haproxy       nbthread 2, http-reuse always (bench/conf/haproxy.cfg)
  seed          the seed's nginx+Lua config verbatim (bench/seed-nginx.conf; 2 workers)
  openresty-fair  balancer_by_lua + keepalive (bench/conf/openresty-fair.conf)

Rounds are interleaved; medians are reported. Per target: requests/s (wrk -t1 -c64), ratio
to direct and to nginx-static, proxy CPU per request ((utime+stime of the proxy's processes
over the run) / requests) and peak RSS. Then quayside alone: with 10,000 backends in 1,000
services with host rules; under 1,000 admin changes per second; idle RSS and the RSS added
by 10,000 idle keepalive client connections; 10,000 /add calls with persistence on.

Latency at 5,000 and 10,000 req/s (p50/p99/p99.9 from each request's scheduled send time)
comes from bench/latency, a small open-loop client in this workspace: 5 s counted after 1 s
at the same rate that is not (the first ~50 ms are slow for every target and made up about
half of the slowest 1 % when they were counted, before session 8).

Needs: wrk, nginx-extras, haproxy, lua-resty-core (apt-get install -y wrk nginx-extras
haproxy lua-resty-core) and `cargo build --release --workspace`. Run: python3 bench/perf.py
Settings by environment: ROUNDS, DURATION, CONNS; TARGETS=a,b (only these, with direct and
nginx-static); QUICK=1 (stop after the side-by-side tables); CHURN_ROUNDS (rounds of the
table-changes section, default max(ROUNDS, 6)); QUAYSIDE_BASE=path (another
quayside build as target `quayside-base`, for before/after comparisons in one run).
"""
import http.client
import json
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
DURATION = os.environ.get("DURATION", "5s")
CONNS = int(os.environ.get("CONNS", "64"))
QUAYSIDE = os.path.join(ROOT, "target/release/quayside")
Q_PROXY, Q_ADMIN = 18380, 18381
HZ = os.sysconf("SC_CLK_TCK")
work = tempfile.mkdtemp(prefix="quayside-perf-")
os.makedirs(os.path.join(work, "logs"), exist_ok=True)
procs = []


def spawn(args, **kw):
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    procs.append(p)
    return p


def tree(pid):
    out = [pid]
    try:
        kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    except OSError:
        kids = []
    for k in kids:
        out += tree(int(k))
    return out


def cpu_ticks(pid):
    total = 0
    for p in tree(pid):
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        except OSError:
            pass
    return total


def rss_kb(pid, field="VmHWM"):
    total = 0
    for p in tree(pid):
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def http_get(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body


def wrk(port, duration=DURATION, conns=CONNS, host=None):
    args = ["wrk", "-t1", f"-c{conns}", f"-d{duration}", f"http://127.0.0.1:{port}/"]
    if host:
        args[1:1] = ["-H", f"Host: {host}"]
    out = subprocess.run(args, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    n = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(bad.group(1)) if bad else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return rps, n, errors


def start_quayside(state=None, proxy=Q_PROXY, admin=Q_ADMIN, binary=QUAYSIDE, extra=()):
    args = [binary, "--no-docker", "--listen", f"127.0.0.1:{proxy}", "--admin-listen",
            f"127.0.0.1:{admin}", "--state", state or os.path.join(work, "q-state.json"), *extra]
    p = spawn(args, preexec_fn=lambda: resource.setrlimit(
        resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2))
    time.sleep(0.8)
    for i, port in ((1, 18081), (2, 18082)):
        assert http_get(admin, f"/add?no={i}&ip=127.0.0.1&port={port}")[0] == 200
    return p


def main():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    spawn(["nginx", "-c", os.path.join(ROOT, "bench/nginx-backend.conf"), "-p", work + "/"])
    seed_conf = os.path.join(work, "seed.conf")
    with open(os.path.join(ROOT, "bench/seed-nginx.conf")) as f:
        open(seed_conf, "w").write(f.read().replace(
            "worker_processes  4;", "worker_processes  2;  # two workers, like every proxy here"))
    targets = {
        "direct": (None, 18081),
        "quayside": (start_quayside(), Q_PROXY),
        "nginx-static": (spawn(["nginx", "-c", os.path.join(ROOT, "bench/conf/nginx-static.conf"), "-p", work + "/"]), 18580),
        "haproxy": (spawn(["haproxy", "-f", os.path.join(ROOT, "bench/conf/haproxy.cfg")]), 18680),
        "seed": (spawn(["nginx", "-c", seed_conf, "-p", work + "/"]), 18480),
        "openresty-fair": (spawn(["nginx", "-c", os.path.join(ROOT, "bench/conf/openresty-fair.conf"), "-p", work + "/"]), 18780),
    }
    # With access logs to a file each: quayside's JSON lines against nginx's combined format.
    logged_conf = os.path.join(work, "nginx-static-log.conf")
    with open(os.path.join(ROOT, "bench/conf/nginx-static.conf")) as f:
        open(logged_conf, "w").write(f.read()
            .replace("access_log off;", f"access_log {work}/nginx-access.log;")
            .replace("18580", "18590").replace("nginx-static.pid", "nginx-static-log.pid"))
    targets["quayside-log"] = (start_quayside(os.path.join(work, "log-state.json"), 18392, 18393,
                                              extra=("--access-log", os.path.join(work, "q-access.log"))), 18392)
    targets["nginx-static-log"] = (spawn(["nginx", "-c", logged_conf, "-p", work + "/"]), 18590)
    # QUAYSIDE_BASE=path/to/quayside: another build side by side, for an A/B comparison.
    if os.environ.get("QUAYSIDE_BASE"):
        targets["quayside-base"] = (start_quayside(os.path.join(work, "base-state.json"), 18390, 18391,
                                                   os.environ["QUAYSIDE_BASE"]), 18390)
    only = os.environ.get("TARGETS")
    if only:
        keep = set(only.split(",")) | {"direct", "nginx-static"}
        for name in list(targets):
            if name not in keep:
                p = targets.pop(name)[0]
                if p:
                    p.terminate()
    time.sleep(1)
    for port in [p for n, (_, p) in targets.items() if n in ("seed", "openresty-fair")]:
        for i, bport in ((1, 18081), (2, 18082)):
            assert http_get(port, f"/add?no={i}&ip=127.0.0.1&port={bport}")[0] == 200
    for name, (_, port) in targets.items():
        try:
            assert http_get(port, "/")[0] == 200, name
        except OSError as e:
            sys.exit(f"{name} on port {port}: {e}")

    results = {name: [] for name in targets}
    for r in range(ROUNDS):
        for name, (p, port) in targets.items():
            t0 = cpu_ticks(p.pid) if p else 0
            rps, n, errors = wrk(port)
            t1 = cpu_ticks(p.pid) if p else 0
            cpu_us = (t1 - t0) / HZ * 1e6 / n if p else float("nan")
            results[name].append((rps, cpu_us, errors))
            print(f"round {r + 1} {name:15} {rps:9.0f} req/s  {cpu_us:5.1f} us CPU/req  errors {errors}", file=sys.stderr)

    med = {n: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v), sum(x[2] for x in v))
           for n, v in results.items()}
    d, s = med["direct"][0], med["nginx-static"][0]
    print(f"\n| target | req/s (median of {ROUNDS}) | ÷ direct | ÷ nginx-static | proxy CPU per request | peak RSS | errors |")
    print("|---|---|---|---|---|---|---|")
    for name, (rps, cpu, errs) in med.items():
        p = targets[name][0]
        rss = f"{rss_kb(p.pid) / 1024:.1f} MB" if p else "-"
        cpu_s = f"{cpu:.1f} µs" if p else "-"
        print(f"| {name} | {rps:,.0f} | {rps / d:.2f} | {rps / s:.2f} | {cpu_s} | {rss} | {errs} |")

    # Latency at fixed rates (open loop, from scheduled send times: coordinated omission
    # accounted for), interleaved.
    lat_bin = os.path.join(ROOT, "target/release/latency")
    if os.path.exists(lat_bin):
        # Several interleaved rounds per cell; the median p99 and the range of p99s.
        # The order of the targets alternates by round; each measurement is printed.
        cells = {}
        for r in range(ROUNDS):
            for rate in (5000, 10000):
                names = [n for n in ("quayside", "quayside-base", "nginx-static", "haproxy") if n in targets]
                for name in names if r % 2 == 0 else names[::-1]:
                    out = subprocess.run([lat_bin, f"127.0.0.1:{targets[name][1]}", str(rate), "5", "64", "1"],
                                         capture_output=True, text=True).stdout
                    m = re.search(r"rate (\d+)/s p50 ([\d.]+) ms p99 ([\d.]+) ms p99.9 ([\d.]+) ms max ([\d.]+) ms errors (\d+)", out)
                    if m:
                        print(f"latency round {r + 1} {name:<13} {rate}/s p50 {m.group(2)} ms "
                              f"p99 {m.group(3)} ms p99.9 {m.group(4)} ms", flush=True)
                        cells.setdefault((rate, name), []).append(
                            tuple(float(m.group(i)) for i in (2, 3, 4, 5)) + (int(m.group(6)),))
        print(f"\n| target | rate | p50 | p99 (median of {ROUNDS}) | p99 range | p99.9 | max | errors |")
        print("|---|---|---|---|---|---|---|---|")
        for (rate, name), runs in cells.items():
            med_of = lambda i: statistics.median(r[i] for r in runs)
            p99s = sorted(r[1] for r in runs)
            print(f"| {name} | {rate:,}/s | {med_of(0):.3f} ms | {med_of(1):.3f} ms | "
                  f"{p99s[0]:.3f}–{p99s[-1]:.3f} ms | {med_of(2):.3f} ms | {max(r[3] for r in runs):.3f} ms | "
                  f"{sum(r[4] for r in runs)} |")
        # Paired by round (the two ran back to back), which the spread between rounds does not
        # swamp as it does the medians above.
        for rate in (5000, 10000):
            q, n = cells.get((rate, "quayside"), []), cells.get((rate, "nginx-static"), [])
            ratios = [a[1] / b[1] for a, b in zip(q, n) if b[1] > 0]
            if ratios:
                print(f"- p99 at {rate:,}/s, quayside ÷ nginx-static paired by round: median "
                      f"{statistics.median(ratios):.2f} (range {min(ratios):.2f}–{max(ratios):.2f}), "
                      f"quayside lower in {sum(x < 1 for x in ratios)} of {len(ratios)} rounds")
    else:
        print("\n(no latency figures: build bench/latency with cargo build --release -p latency)")

    # quayside alone from here.
    for name, (p, _) in targets.items():
        if p and name != "quayside":
            p.terminate()
    q = targets["quayside"][0]
    print()
    if os.environ.get("QUICK"):
        return

    # Table changes under load: 1,000 admin changes per second during a throughput run,
    # interleaved with runs without changes. A second instance keeps its state file on tmpfs,
    # where fsync costs nothing: the difference between the two is what durability costs. A
    # third kind of round runs no changes but a bare writer making the same 1,000 durable
    # writes/s to the same disk (bench/latency's fsyncs): what the disk alone costs here. A
    # fourth sends the churn client's requests to a bare nginx instead: what serving 1,000
    # sequential HTTP requests/s costs at all.
    # Each round's ratio is to a plain run right beside it (medians of those; the box's
    # throughput drifts between rounds by more than the effect measured).
    shm_state = os.path.join("/dev/shm", f"quayside-perf-{os.getpid()}.json")
    q_shm = start_quayside(shm_state, Q_PROXY + 20, Q_ADMIN + 20) if os.path.isdir("/dev/shm") else None
    churn_bin = os.path.join(ROOT, "target/release/churn")
    fsyncs_bin = os.path.join(ROOT, "target/release/fsyncs")
    secs = DURATION.rstrip("s")

    def beside(cmd, port, pid):
        side = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        t0 = cpu_ticks(pid)
        rps, _, errors = wrk(port)
        cpu = (cpu_ticks(pid) - t0) / HZ
        m = re.search(r"(?:changes|writes) (\d+) rate (\d+)/s(?: failed (\d+))?", side.communicate()[0])
        return rps, errors, int(m.group(2)), int(m.group(3) or 0), cpu

    def churned(proxy, admin, pid):
        return beside([churn_bin, f"127.0.0.1:{admin}", "1000", secs], proxy, pid)

    def bare_fsyncs():
        return beside([fsyncs_bin, os.path.join(work, "fsyncs.bin"), "1000", secs], Q_PROXY, q.pid)

    # A bare nginx (its own process) answering 200 to every path: the same sequential requests
    # sent there cost what serving 1,000 requests/s costs at all, with no change and no disk.
    answer = spawn(["nginx", "-c", os.path.join(ROOT, "bench/conf/nginx-answer.conf"), "-p", work + "/"])
    time.sleep(0.5)

    # CPU per change without load first (robust where throughput ratios are noisy).
    def cpu_per_change(admin, pid, *mode):
        t0 = cpu_ticks(pid)
        out = subprocess.run([churn_bin, f"127.0.0.1:{admin}", "1000", "5", *mode], capture_output=True, text=True).stdout
        n = int(re.search(r"changes (\d+)", out).group(1))
        return (cpu_ticks(pid) - t0) / HZ / n * 1e6
    idle_cost = [("a change, state file on disk", cpu_per_change(Q_ADMIN, q.pid))]
    if q_shm:
        idle_cost.append(("a change, state file on tmpfs", cpu_per_change(Q_ADMIN + 20, q_shm.pid)))
    idle_cost.append(("a `GET /get` (no change)", cpu_per_change(Q_ADMIN, q.pid, "get")))
    print("- CPU per admin request at 1,000/s without load (utime+stime over 5 s): quayside " +
          ", ".join(f"{c:.0f} µs for {w}" for w, c in idle_cost) +
          f"; nginx answering `return 200` to the same requests {cpu_per_change(18099, answer.pid, 'get'):.0f} µs")

    churn_rounds = int(os.environ.get("CHURN_ROUNDS", str(max(ROUNDS, 6))))
    def answered():
        return beside([churn_bin, "127.0.0.1:18099", "1000", secs, "get"], Q_PROXY, answer.pid)

    kinds = [("state file on disk", lambda: churned(Q_PROXY, Q_ADMIN, q.pid)),
             ("bare writer, 1,000 fdatasync/s to the same disk, no changes", bare_fsyncs),
             ("nginx `return 200` answering the same 1,000 sequential requests/s, no changes", answered)]
    if q_shm:
        kinds.insert(1, ("state file on tmpfs (fsync free)", lambda: churned(Q_PROXY + 20, Q_ADMIN + 20, q_shm.pid)))
    results = {label: [] for label, _ in kinds}
    for r in range(churn_rounds):
        for label, run in kinds:
            port = Q_PROXY if "tmpfs" not in label else Q_PROXY + 20
            # The plain run goes first in even rounds and second in odd ones, so any drift
            # from one run to the next cancels out.
            if r % 2 == 0:
                plain = wrk(port)[0]
                results[label].append((plain,) + run())
            else:
                loaded = run()
                results[label].append((wrk(port)[0],) + loaded)
    for label, runs in results.items():
        base = statistics.median(r[0] for r in runs)
        rps = statistics.median(r[1] for r in runs)
        paired = sorted(r[1] / r[0] for r in runs)
        if label.startswith("state file"):
            what = (f"{min(r[3] for r in runs)}–{max(r[3] for r in runs)}/s applied, "
                    f"{sum(r[4] for r in runs)} failed changes, "
                    f"quayside CPU {statistics.median(r[5] for r in runs):.2f} s per run")
        elif label.startswith("bare"):
            what = f"{min(r[3] for r in runs)}–{max(r[3] for r in runs)} writes/s"
        else:
            what = (f"{min(r[3] for r in runs)}–{max(r[3] for r in runs)} requests/s, "
                    f"nginx CPU {statistics.median(r[5] for r in runs):.2f} s per run")
        print(f"- 1,000 changes/s under load, {label}: {rps:,.0f} req/s vs {base:,.0f} without; "
              f"paired ratio median {statistics.median(paired):.2f}× (range {paired[0]:.2f}–{paired[-1]:.2f}, "
              f"{churn_rounds} rounds), {sum(r[2] for r in runs)} failed requests, {what}")
    answer.terminate()
    if q_shm:
        q_shm.terminate()
        q_shm.wait()
        for f in (shm_state, shm_state + ".journal"):
            if os.path.exists(f):
                os.remove(f)

    # 10,000 /add calls with persistence on (16 concurrent clients).
    def adds(k, per):
        c = http.client.HTTPConnection("127.0.0.1", Q_ADMIN, timeout=30)
        for i in range(per):
            c.request("GET", f"/add?no=s{k}x{i}&ip=127.0.0.{1 + (i % 200)}&port={1000 + i % 50000}&service=svc{(k * per + i) % 1000}")
            r = c.getresponse()
            r.read()
            assert r.status == 200
    t0 = time.monotonic()
    ths = [threading.Thread(target=adds, args=(k, 625)) for k in range(16)]
    [t.start() for t in ths]
    [t.join() for t in ths]
    add_s = time.monotonic() - t0
    print(f"- 10,000 /add calls with the state file on (16 clients): {add_s:.2f} s ({10000 / add_s:,.0f}/s)")

    # Host rules for the 1,000 services, then throughput with 10,000 backends registered.
    def rules(k):
        c = http.client.HTTPConnection("127.0.0.1", Q_ADMIN, timeout=30)
        for i in range(k, 1000, 8):
            c.request("PUT", f"/api/v1/services/svc{i}", body=json.dumps({"hosts": [f"svc{i}.bench"]}))
            r = c.getresponse()
            r.read()
    ths = [threading.Thread(target=rules, args=(k,)) for k in range(8)]
    [t.start() for t in ths]
    [t.join() for t in ths]
    # Against a second instance with only the two backends, interleaved in both orders.
    small = start_quayside(os.path.join(work, "q-small.json"), Q_PROXY + 10, Q_ADMIN + 10)
    # Let the setup's state-file writes reach the disk first: the kernel's writeback would
    # otherwise share the CPU with the first rounds on the big instance.
    os.sync()
    time.sleep(2)
    big_runs, small_runs = [], []
    big_cpu, small_cpu = [], []
    for r in range(4):
        pair = [(big_runs, big_cpu, Q_PROXY, q.pid), (small_runs, small_cpu, Q_PROXY + 10, small.pid)]
        for runs, cpu, port, pid in (pair if r % 2 == 0 else pair[::-1]):
            t0 = cpu_ticks(pid)
            rps, n, _ = wrk(port)
            runs.append(rps)
            cpu.append((cpu_ticks(pid) - t0) / HZ / n * 1e6)
    small.terminate()
    small.wait()
    big, two = statistics.median(big_runs), statistics.median(small_runs)
    print(f"- with 10,000 backends in 1,000 host-routed services: {big:,.0f} req/s vs {two:,.0f} "
          f"for a second instance with two ({big / two:.2f}×; 4 interleaved rounds each, medians; "
          f"per round {' '.join(f'{b:,.0f}/{t:,.0f}' for b, t in zip(big_runs, small_runs))}); "
          f"CPU per request {statistics.median(big_cpu):.1f} vs {statistics.median(small_cpu):.1f} µs")

    # Memory: idle RSS of a fresh quayside, then 10,000 idle keepalive client connections.
    q.terminate()
    q.wait()
    q = start_quayside(os.path.join(work, "q2.json"))
    time.sleep(0.5)
    idle = rss_kb(q.pid, "VmRSS")
    socks = []
    req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    for i in range(10000):
        s = socket.create_connection(("127.0.0.1", Q_PROXY))
        s.sendall(req)
        socks.append(s)
    for s in socks:
        s.recv(65536)
    time.sleep(1)
    loaded = rss_kb(q.pid, "VmRSS")
    # Idle connections park (give hyper's buffers back) after 0.25-0.5 s; freed memory is
    # returned to the OS every 2 s after a burst of parks.
    time.sleep(4)
    settled = rss_kb(q.pid, "VmRSS")
    peak = rss_kb(q.pid, "VmHWM")
    print(f"- idle RSS {idle / 1024:.1f} MB; with 10,000 idle keepalive client connections "
          f"+{(loaded - idle) / 1024:.1f} MB after 1 s, +{(settled - idle) / 1024:.1f} MB after 5 s "
          f"(peak during the burst +{(peak - idle) / 1024:.1f} MB)")
    for s in socks:
        s.close()


def stop_all():
    """Stop every process `spawn` started (killed if it does not end within 5 s)."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()


if __name__ == "__main__":
    try:
        main()
    finally:
        stop_all()
