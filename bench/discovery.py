#!/usr/bin/env python3
"""Discovery latency: milliseconds from `docker run -d` returning to the first request that
quayside answers from the new container (median and worst over N starts), and the time until
50 containers started at once are all routed.

Needs: Docker, the release binary (cargo build --release) and the test image
quayside-test-whoami:latest (built by `cargo test --test docker`, or scripts/build-images.sh
and then `docker tag quayside-whoami:local quayside-test-whoami:latest`).
Run by hand: python3 bench/discovery.py
"""
import http.client
import json
import os
import statistics
import subprocess
import sys
import time

PREFIX = "qbench"
CLEANUP = "quayside-bench=1"
IMAGE = os.environ.get("IMAGE", "quayside-test-whoami:latest")
PROXY = ("127.0.0.1", 18180)
ADMIN = ("127.0.0.1", 18181)
RUNS = int(os.environ.get("RUNS", "20"))
BURST = int(os.environ.get("BURST", "50"))


def sh(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


def get(addr, path, host="bench"):
    c = http.client.HTTPConnection(*addr, timeout=2)
    try:
        c.request("GET", path, headers={"Host": host})
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


def cleanup():
    ids = sh("docker", "ps", "-aq", "--filter", f"label={CLEANUP}").split()
    if ids:
        sh("docker", "rm", "-f", *ids)


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    binary = os.path.join(root, "target", "release", "quayside")
    cleanup()
    q = subprocess.Popen(
        [binary, "--listen", "%s:%d" % PROXY, "--admin-listen", "%s:%d" % ADMIN,
         "--state", "/tmp/quayside-bench-state.json", "--label-prefix", PREFIX],
        stderr=subprocess.DEVNULL)
    try:
        time.sleep(1)
        lat = []
        for i in range(RUNS):
            t_cmd = time.monotonic()
            cid = sh("docker", "run", "-d", "--label", CLEANUP, "--label", f"{PREFIX}.service=s{i}",
                     "--label", f"{PREFIX}.host=s{i}.bench", IMAGE)
            t0 = time.monotonic()
            while True:
                try:
                    status, body = get(PROXY, "/", host=f"s{i}.bench")
                    if status == 200 and body.startswith(cid[:12]):
                        break
                except OSError:
                    pass
                if time.monotonic() - t0 > 10:
                    sys.exit(f"container {cid[:12]} not routed after 10 s")
            t1 = time.monotonic()
            lat.append((t1 - t0) * 1000)
            print(f"start {i + 1:2}: docker run took {(t0 - t_cmd) * 1000:6.1f} ms, routed {lat[-1]:6.1f} ms after it returned")
        print(f"routed after docker run returned: median {statistics.median(lat):.1f} ms, worst {max(lat):.1f} ms over {RUNS} starts")
        cleanup()

        # Burst: BURST containers started at once (parallel docker run).
        t0 = time.monotonic()
        procs = [subprocess.Popen(["docker", "run", "-d", "--label", CLEANUP, "--label", f"{PREFIX}.service=burst",
                                   IMAGE], stdout=subprocess.PIPE, text=True) for _ in range(BURST)]
        ids = [p.communicate()[0].strip() for p in procs]
        t_started = time.monotonic()
        while True:
            _, body = get(ADMIN, "/api/v1/services/burst")
            try:
                n = len(json.loads(body).get("backends", []))
            except ValueError:
                n = 0
            if n == BURST:
                break
            if time.monotonic() - t0 > 60:
                sys.exit(f"only {n} of {BURST} routed after 60 s")
            time.sleep(0.005)
        t1 = time.monotonic()
        print(f"{BURST} containers started at once: all docker run returned after {(t_started - t0) * 1000:.0f} ms, "
              f"all routed {(t1 - t0) * 1000:.0f} ms after the first docker run, {(t1 - t_started) * 1000:.0f} ms after the last returned")
    finally:
        q.terminate()
        q.wait()
        cleanup()


if __name__ == "__main__":
    main()
