#!/usr/bin/env python3
"""What the dashboard and its figures cost the server.

Starts a release quayside (--no-docker) with BACKENDS manual entries in 10 services, then
measures quayside's own CPU time (from /proc) over SECONDS:
  1. idle (the stats sampler runs once a second regardless),
  2. with one dashboard open in a headless Chromium (its calls every second and the event
     stream),
and the size and answer time of GET /api/v1/stats, whole and with `since`.

Needs: cargo build --release, chromium. Run: python3 bench/dashboard.py
(BACKENDS=100 SECONDS=30 QUAYSIDE_BIN=target/release/quayside; IDLE_ONLY=1 measures only the
idle phase, e.g. of a build from before the dashboard, for comparison)
"""
import json
import os
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request

BACKENDS = int(os.environ.get("BACKENDS", "100"))
SECONDS = float(os.environ.get("SECONDS", "30"))
BIN = os.environ.get("QUAYSIDE_BIN", "target/release/quayside")
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


def cpu_over(pid, seconds):
    before = cpu(pid)
    time.sleep(seconds)
    return cpu(pid) - before


def main():
    work = tempfile.mkdtemp(prefix="quayside-dash-")
    proxy, admin = free_port(), free_port()
    q = subprocess.Popen(
        [BIN, "--no-docker", "--listen", f"127.0.0.1:{proxy}", "--admin-listen",
         f"127.0.0.1:{admin}", "--state", f"{work}/state.json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{admin}"
    browser = None
    try:
        for _ in range(100):
            try:
                get(base + "/readyz")
                break
            except OSError:
                time.sleep(0.1)
        for i in range(BACKENDS):
            get(f"{base}/add?no=b{i}&ip=127.0.0.1&port={10000 + i}&service=s{i % 10}")
        time.sleep(3)
        idle = cpu_over(q.pid, SECONDS)
        if os.environ.get("IDLE_ONLY"):
            print(f"{BIN}, {BACKENDS} backends: idle {idle / SECONDS * 1000:.2f} ms of CPU per second")
            return
        browser = subprocess.Popen(
            ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
             f"--user-data-dir={work}/chromium", "--remote-debugging-port=0",
             base + "/dashboard/"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(5)
        open_page = cpu_over(q.pid, SECONDS)
        whole, since, last_only = [], [], []
        body = get(base + "/api/v1/stats")
        points = sum(len(s["points"]) for k in ("services", "backends") for s in json.loads(body)[k])
        last = max(p["t"] for s in json.loads(body)["services"] for p in s["points"])
        for _ in range(20):
            t = time.perf_counter()
            get(base + "/api/v1/stats")
            whole.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            small = get(f"{base}/api/v1/stats?since={last - 1}")
            since.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            page = get(f"{base}/api/v1/stats?backends=last")
            last_only.append((time.perf_counter() - t) * 1000)
        print(f"{BACKENDS} backends in 10 services, {SECONDS:.0f} s per phase\n")
        print("| measure | result |\n|---|---|")
        print(f"| quayside CPU, idle (sampler only) | {idle / SECONDS * 1000:.2f} ms per second |")
        print(f"| quayside CPU, one dashboard open | {open_page / SECONDS * 1000:.2f} ms per second |")
        print(f"| GET /api/v1/stats, whole ({points} points) | {len(body):,} bytes, median {statistics.median(whole):.2f} ms |")
        print(f"| GET /api/v1/stats?since= (one second) | {len(small):,} bytes, median {statistics.median(since):.2f} ms |")
        print(f"| GET /api/v1/stats?backends=last (the page's first call) | {len(page):,} bytes, median {statistics.median(last_only):.2f} ms |")
    finally:
        if browser:
            browser.kill()
            browser.wait()
        q.terminate()
        q.wait()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
