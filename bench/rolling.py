#!/usr/bin/env python3
"""Failed requests during a rolling replacement under load: quayside (labels, no script)
against the seed's nginx+Lua config (bench/seed-nginx.conf, the seed verbatim but for the
marked lines) fed by a script the way the seed's README suggests (/add the new container,
/delete the old one, then stop it).

Three whoami containers (every other one ignores SIGTERM) are replaced one by one, first
with `docker stop -t 2`, then with `docker kill`, while wrk keeps 16 connections busy.

Needs: Docker, wrk, nginx-extras, the release binary and the test image
quayside-test-whoami:latest (built by `cargo test --test docker`). Run: python3 bench/rolling.py
"""
import http.client
import json
import os
import re
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = "quayside-test-whoami:latest"
CLEANUP = "quayside-bench-rolling=1"
PREFIX = "qroll"
QPROXY, QADMIN = ("127.0.0.1", 18470), ("127.0.0.1", 18471)
SEED = ("127.0.0.1", 18480)
WRK_SECONDS = 14


def sh(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


def get(addr, path):
    c = http.client.HTTPConnection(*addr, timeout=3)
    c.request("GET", path)
    r = c.getresponse()
    body = r.read().decode()
    c.close()
    return r.status, body


def cleanup():
    ids = sh("docker", "ps", "-aq", "--filter", f"label={CLEANUP}").split()
    if ids:
        sh("docker", "rm", "-f", *ids)


def start(i):
    args = ["docker", "run", "-d", "--label", CLEANUP, "--label", f"{PREFIX}.enable=true"]
    if i % 2 == 0:
        args += ["-e", "WHOAMI_IGNORE_SIGTERM=1"]
    cid = sh(*args, IMAGE)
    ip = sh("docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", cid)
    return cid, ip


def quayside_routed(cid):
    d = json.loads(get(QADMIN, "/api/v1/discovery")[1])
    return any(c["id"] == cid and c["routed"] for c in d["containers"])


def run(target, how):
    cleanup()
    seq = [0]

    def register(cid, ip):
        if target == "seed":
            seq[0] += 1
            no = str(seq[0])
            assert get(SEED, f"/add?no={no}&ip={ip}&port=80")[0] == 200
            return no
        while not quayside_routed(cid):
            time.sleep(0.01)
        return cid

    live = []
    for i in range(3):
        cid, ip = start(i)
        live.append((cid, register(cid, ip)))
    addr = SEED if target == "seed" else QPROXY
    wrk = subprocess.Popen(["wrk", "-t1", "-c16", f"-d{WRK_SECONDS}s", "http://%s:%d/" % addr],
                           stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    for i in range(3):
        cid, ip = start(i)
        key = register(cid, ip)
        old_cid, old_key = live[i]
        live[i] = (cid, key)
        if target == "seed":
            get(SEED, f"/delete?no={old_key}")
        if how == "stop":
            sh("docker", "stop", "-t", "2", old_cid)
        else:
            sh("docker", "kill", old_cid)
        time.sleep(0.5)
    out = wrk.communicate()[0]
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    sock_errors = sum(int(x) for x in sock.groups()) if sock else 0
    cleanup()
    return total, non2xx, sock_errors


def main():
    work = tempfile.mkdtemp()
    os.makedirs(os.path.join(work, "logs"), exist_ok=True)
    nginx = subprocess.Popen(["nginx", "-c", os.path.join(ROOT, "bench/seed-nginx.conf"), "-p", work + "/"],
                             stderr=subprocess.DEVNULL)
    q = subprocess.Popen([os.path.join(ROOT, "target/release/quayside"), "--listen", "%s:%d" % QPROXY,
                          "--admin-listen", "%s:%d" % QADMIN, "--state", os.path.join(work, "state.json"),
                          "--label-prefix", PREFIX], stderr=subprocess.DEVNULL)
    time.sleep(1)
    try:
        print(f"{'target':9} {'removal':8} {'requests':>9} {'non-2xx':>8} {'socket errors':>14} {'failed %':>9}")
        for how in ["stop", "kill"]:
            for target in ["seed", "quayside"]:
                total, bad, sock = run(target, how)
                print(f"{target:9} {how:8} {total:9d} {bad:8d} {sock:14d} {100 * (bad + sock) / max(total, 1):8.2f}%")
    finally:
        q.terminate()
        nginx.terminate()
        q.wait()
        nginx.wait()
        cleanup()


if __name__ == "__main__":
    main()
