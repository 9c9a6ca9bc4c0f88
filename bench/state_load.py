#!/usr/bin/env python3
"""How long quayside takes to load a state file of N entries, and the memory it then holds.

For each N given (default 10000 100000): writes a state file of N manual entries in 100
services (a host rule each), starts quayside on it (`QUAYSIDE_BIN`, default
target/release/quayside), and prints the time from start to `/readyz` answering 200 and the
RSS (and its peak) at that moment. `WATCH=S` then reads the RSS every S seconds, three times
(the memory an idle registry of that size grows to).

Run: cargo build --release && python3 bench/state_load.py 10000 100000
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

BIN = os.environ.get("QUAYSIDE_BIN", os.path.join(os.path.dirname(__file__), "..", "target/release/quayside"))
WATCH = float(os.environ.get("WATCH", "0"))


def state(n, path):
    backends = [
        {"no": f"n{i}", "address": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
         "port": 8000 + i % 1000, "service": f"s{i % 100}"}
        for i in range(n)
    ]
    services = [{"name": f"s{j}", "hosts": [f"s{j}.example.com"]} for j in range(100)]
    with open(path, "w") as f:
        json.dump({"version": 1, "backends": backends, "services": services}, f, separators=(",", ":"))


def rss(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            fields[k] = v.split()[0] if v.split() else "0"
    return int(fields["VmRSS"]) // 1024, int(fields["VmHWM"]) // 1024


def ready(port):
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1).status == 200
    except OSError:
        return False


for n in [int(a) for a in sys.argv[1:]] or [10000, 100000]:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "state.json")
        state(n, path)
        size = os.path.getsize(path) / 1e6
        started = time.monotonic()
        q = subprocess.Popen([BIN, "--no-docker", "--listen", "127.0.0.1:18950",
                              "--admin-listen", "127.0.0.1:18951", "--state", path],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not ready(18951):
            time.sleep(0.02)
        took = time.monotonic() - started
        now, peak = rss(q.pid)
        line = f"{n} entries ({size:.1f} MB): ready in {took:.3f} s, RSS {now} MB (peak {peak} MB)"
        for _ in range(3 if WATCH else 0):
            time.sleep(WATCH)
            line += f", +{WATCH:g} s: {rss(q.pid)[0]} MB"
        print(line, flush=True)
        q.terminate()
        q.wait()
