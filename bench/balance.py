#!/usr/bin/env python3
"""Balance quality with one slow backend: for each strategy, wrk drives quayside (16
connections, 5 s) in front of three whoami backends on loopback, one of which waits 20 ms
per request. Reported per strategy: throughput, each backend's share of requests, the
coefficient of variation (stddev / mean) of per-backend request counts and of per-backend
in-flight load (sampled every 20 ms from /api/v1/backends).

Needs: wrk, the release binary (cargo build --release) and the static whoami binary
(RUSTFLAGS='-C target-feature=+crt-static' cargo build --release -p whoami
 --target x86_64-unknown-linux-gnu --target-dir target-static). Run: python3 bench/balance.py
"""
import http.client
import json
import os
import statistics
import subprocess
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WHOAMI = os.path.join(ROOT, "target-static/x86_64-unknown-linux-gnu/release/whoami")
QUAYSIDE = os.path.join(ROOT, "target/release/quayside")
PROXY, ADMIN = ("127.0.0.1", 18380), ("127.0.0.1", 18381)
BACKENDS = [("fast1", 18391, 0), ("fast2", 18392, 0), ("slow", 18393, 20)]
DURATION = os.environ.get("DURATION", "5s")


def call(method, path, body=None):
    c = http.client.HTTPConnection(*ADMIN, timeout=5)
    c.request(method, path, body=body)
    r = c.getresponse()
    data = r.read().decode()
    c.close()
    return r.status, data


def backends():
    return {b["no"]: b["health"] for b in json.loads(call("GET", "/api/v1/backends")[1])["backends"]}


def cv(xs):
    m = statistics.mean(xs)
    return statistics.pstdev(xs) / m if m else 0.0


def main():
    procs = []
    try:
        for name, port, delay in BACKENDS:
            env = dict(os.environ, PORT=str(port), WHOAMI_NAME=name, WHOAMI_DELAY_MS=str(delay))
            procs.append(subprocess.Popen([WHOAMI], env=env, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen([QUAYSIDE, "--no-docker", "--listen", "%s:%d" % PROXY,
                                       "--admin-listen", "%s:%d" % ADMIN,
                                       "--state", "/tmp/quayside-balance-bench.json"], stderr=subprocess.DEVNULL))
        time.sleep(1)
        for name, port, _ in BACKENDS:
            call("GET", f"/add?no={name}&ip=127.0.0.1&port={port}")
        print(f"{'strategy':12} {'req/s':>8} {'fast1':>6} {'fast2':>6} {'slow':>6} {'CV(requests)':>13} {'CV(in-flight)':>14}")
        for lb in ["round_robin", "random", "least_conn", "p2c", "hash"]:
            call("PUT", "/api/v1/services/default", json.dumps({"lb": lb}))
            before = {k: v["requests"] for k, v in backends().items()}
            samples = {name: [] for name, _, _ in BACKENDS}
            done = threading.Event()

            def sample():
                while not done.is_set():
                    for k, v in backends().items():
                        samples[k].append(v["in_flight"])
                    time.sleep(0.02)

            t = threading.Thread(target=sample)
            t.start()
            out = subprocess.run(["wrk", "-t1", "-c16", "-d" + DURATION, "http://%s:%d/" % PROXY],
                                 capture_output=True, text=True).stdout
            done.set()
            t.join()
            rps = float([l for l in out.splitlines() if "Requests/sec" in l][0].split()[1])
            after = {k: v["requests"] for k, v in backends().items()}
            counts = [after[n] - before[n] for n, _, _ in BACKENDS]
            total = sum(counts)
            shares = [c / total for c in counts]
            loads = [statistics.mean(samples[n]) for n, _, _ in BACKENDS]
            print(f"{lb:12} {rps:8.0f} " + " ".join(f"{s:6.1%}" for s in shares)
                  + f" {cv(counts):13.2f} {cv(loads):14.2f}")
    finally:
        for p in procs:
            p.terminate()
            p.wait()


if __name__ == "__main__":
    main()
