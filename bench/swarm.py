#!/usr/bin/env python3
"""Swarm: how soon scaled tasks are routed, how many Docker API calls quayside makes while idle,
and how long a resync takes with many tasks.

A single-node swarm (made here and left at the end unless the machine is in one already), an
attachable overlay network, quayside in a container on it (the routing mesh does not work on
this machine) talking to Docker through a counting proxy of this script's own (a Unix socket
mounted as the container's docker.sock), and a labelled whoami service.

  1. idle, no labelled service: API calls for IDLE seconds;
  2. ROUNDS x (scale 2 -> 6, then 6 -> 2): time from `docker service scale -d` returning until
     /api/v1/backends lists exactly the running tasks (median and worst);
  3. idle, one labelled service: API calls for IDLE seconds;
  4. resync: scale to MANY tasks, restart quayside, time until it lists them all.

Images come from scripts/build-images.sh (PROFILE=dev: the control plane's timing does not
depend on the optimiser). Run by hand: python3 bench/swarm.py
"""
import http.client
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time

ROUNDS = int(os.environ.get("ROUNDS", "5"))
IDLE = int(os.environ.get("IDLE", "30"))
MANY = int(os.environ.get("MANY", "100"))
TOKEN = "bench-token"
Q_IMAGE, W_IMAGE = "quayside-bench-swarm:latest", "quayside-bench-swarm-whoami:latest"
NET, SVC, QNAME, PREFIX = "qbench-net", "qbench-web", "qbench-quayside", "qbench"
SOCK = "/tmp/qbench-docker.sock"
ADMIN = ("127.0.0.1", 18191)


def sh(*args, check=True):
    r = subprocess.run(args, capture_output=True, text=True)
    if check and r.returncode != 0:
        sys.exit(f"{' '.join(args)}: {r.stderr.strip()}")
    return r.stdout.strip()


class Counter:
    """A Unix-socket proxy to the Docker daemon that counts the requests going through it."""

    REQ = re.compile(rb"(GET|POST|PUT|DELETE|HEAD) (/[^ ?]*)[^ ]* HTTP/1\.[01]\r\n")

    def __init__(self, path):
        if os.path.exists(path):
            os.unlink(path)
        self.calls = []  # (time, method, path)
        self.lock = threading.Lock()
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(path)
        os.chmod(path, 0o666)
        self.server.listen(64)
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect("/var/run/docker.sock")
            threading.Thread(target=self.pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self.pipe, args=(upstream, client, False), daemon=True).start()

    def pipe(self, src, dst, count):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if count:
                    for m in self.REQ.finditer(data):
                        path = re.sub(rb"^/v[0-9.]+", b"", m.group(2)).decode()
                        with self.lock:
                            self.calls.append((time.monotonic(), m.group(1).decode(), path))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def between(self, t0, t1):
        with self.lock:
            return [c for c in self.calls if t0 <= c[0] < t1]


def get(path):
    c = http.client.HTTPConnection(*ADMIN, timeout=5)
    try:
        c.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


def service(*args):
    """`docker service ...`, again while Swarm says "update out of sequence" (it changed the
    service itself in between, e.g. its endpoint just after create)."""
    for _ in range(50):
        r = subprocess.run(["docker", "service", *args], capture_output=True, text=True)
        if r.returncode == 0:
            return
        if "out of sequence" not in r.stderr:
            sys.exit(f"docker service {' '.join(args)}: {r.stderr.strip()}")
        time.sleep(0.1)
    sys.exit(f"docker service {' '.join(args)}: still out of sequence")


def swarm_entries():
    try:
        status, body = get("/api/v1/backends")
    except OSError:
        return None
    if status != 200:
        return None
    return sorted(b["no"] for b in json.loads(body)["backends"] if b["source"] == "swarm")


def wait_listed(n, limit=120):
    want = sorted(f"{SVC}.{i}" for i in range(1, n + 1))
    t0 = time.monotonic()
    while swarm_entries() != want:
        if time.monotonic() - t0 > limit:
            sys.exit(f"not exactly {n} tasks listed after {limit} s: {swarm_entries()}")
        time.sleep(0.02)
    return time.monotonic() - t0


def summary(calls, seconds):
    by = {}
    for _, method, path in calls:
        key = f"{method} {re.sub(r'/[0-9a-z]{25}$', '/{id}', path)}"
        by[key] = by.get(key, 0) + 1
    per_min = len(calls) * 60 / seconds
    return f"{per_min:.0f} calls/min ({', '.join(f'{k}: {v}' for k, v in sorted(by.items())) or 'none'})"


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PROFILE="dev", QUAYSIDE_IMAGE=Q_IMAGE, WHOAMI_IMAGE=W_IMAGE)
    subprocess.run(["bash", "scripts/build-images.sh"], cwd=root, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    made = sh("docker", "info", "--format", "{{.Swarm.LocalNodeState}}") != "active"
    had_gwbridge = subprocess.run(["docker", "network", "inspect", "docker_gwbridge"],
                                  capture_output=True).returncode == 0
    if made:
        sh("docker", "swarm", "init", "--advertise-addr", "127.0.0.1")
    counter = Counter(SOCK)
    try:
        sh("docker", "network", "create", "-d", "overlay", "--attachable", NET)
        sh("docker", "run", "-d", "--name", QNAME, "--network", NET,
           "-p", f"{ADMIN[0]}:{ADMIN[1]}:8001", "-v", f"{SOCK}:/var/run/docker.sock",
           Q_IMAGE, "--admin-listen", "0.0.0.0:8001", "--admin-token", TOKEN,
           "--label-prefix", PREFIX, "--state", "/data/state.json")
        while swarm_entries() is None:
            time.sleep(0.05)

        t0 = time.monotonic()
        time.sleep(IDLE)
        print(f"idle, no labelled service: {summary(counter.between(t0, time.monotonic()), IDLE)}")

        sh("docker", "service", "create", "-d", "--name", SVC, "--network", NET,
           "--label", f"{PREFIX}.port=80", "--replicas", "2", W_IMAGE)
        wait_listed(2)
        up, down = [], []
        for r in range(ROUNDS):
            service("scale", "-d", f"{SVC}=6")
            up.append(wait_listed(6))
            service("scale", "-d", f"{SVC}=2")
            down.append(wait_listed(2))
            print(f"round {r + 1}: 2 -> 6 routed after {up[-1]:.2f} s, 6 -> 2 after {down[-1]:.2f} s")
        print(f"scale 2 -> 6 until routed: median {statistics.median(up):.2f} s, worst {max(up):.2f} s; "
              f"6 -> 2 until only the 2 are listed: median {statistics.median(down):.2f} s, worst {max(down):.2f} s")

        t0 = time.monotonic()
        time.sleep(IDLE)
        print(f"idle, one labelled service: {summary(counter.between(t0, time.monotonic()), IDLE)}")

        t0 = time.monotonic()
        service("scale", "-d", f"{SVC}={MANY}")
        wait_listed(MANY, limit=600)
        print(f"{MANY} tasks running and routed {time.monotonic() - t0:.1f} s after the scale")
        t0 = time.monotonic()
        sh("docker", "restart", "-t", "2", QNAME)
        t_back = time.monotonic()
        wait_listed(MANY)
        t1 = time.monotonic()
        calls = counter.between(t_back, t1)
        print(f"resync after a restart with {MANY} tasks: all listed {(t1 - t_back) * 1000:.0f} ms after "
              f"docker restart returned ({len(calls)} API calls meanwhile)")
    finally:
        sh("docker", "service", "rm", SVC, check=False)
        sh("docker", "rm", "-f", QNAME, check=False)
        for _ in range(300):
            if not sh("docker", "ps", "-aq", "--filter", f"label=com.docker.swarm.service.name={SVC}", check=False):
                break
            time.sleep(0.2)
        sh("docker", "network", "rm", NET, check=False)
        if made:
            sh("docker", "swarm", "leave", "--force", check=False)
            if not had_gwbridge:  # made by swarm init, kept by leave
                sh("docker", "network", "rm", "docker_gwbridge", check=False)
        sh("docker", "rmi", "-f", Q_IMAGE, W_IMAGE, check=False)
        counter.server.close()
        os.unlink(SOCK)


if __name__ == "__main__":
    main()
