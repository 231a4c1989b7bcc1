#!/usr/bin/env python3
"""docker-compose.yml end to end on the images a user builds.

Phase "build": a private dockerd in the host's network namespace (no bridge,
no iptables rules; build containers use the host's network to reach Debian's
archive) bootstraps the local Debian 12 base and builds duet:latest from
deploy/docker/Dockerfile (deploy/docker/build-image --base local), then
Prometheus on the same base (tests/deploy/prometheus.Dockerfile: Debian's
package, as prom/prometheus cannot be pulled). Each image is built once.
Phase "stack": dockerd on the same data root inside a network namespace the
test creates, so the compose network, its DNS and the containers' addresses
exist only there. docker-compose.yml plus compose.local-prometheus.yml (which
only swaps the Prometheus image; Grafana is not started):
`up --scale cloud=2 model cloud edge prometheus`, then the loadgen service of
profile "load" against the edge and, beside it, a MonolithicScore load on the
cloud. Checks: the loadgen runs have queries and no errors; Prometheus scrapes
every target (both cloud replicas found through DNS, the edge, itself) with
up == 1; both replicas served the edge's ScoringSession queries; every
expression of the Grafana dashboard returns data.
    docker_compose_test.py
Prints each phase's duration and the image sizes. Removes everything it made
(containers, volumes, dockerd, its mounts and data root, the namespace).
Exits 77 ("SKIPPED: <reason>") when not root, a tool is missing (docker,
dockerd, docker-compose, debootstrap, nsenter, ip) or the engine cannot run
containers here.
"""
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack  # noqa: E402
from stack import check, log  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
BASE = "duet-debian:bookworm"
IMAGE = "duet:latest"  # what docker-compose.yml runs
PROMETHEUS_IMAGE = "duet-test-prometheus:latest"
PRESET = "rm2"  # docker-compose.yml's default, at its default rows scale
LOAD_SECONDS = 10
PROM = "http://127.0.0.1:9090"  # published by docker-compose.yml, in the netns
CLONE_NEWNET = 0x40000000
BUDGET = None  # stack.Budget of the whole test, set in main()


def sh(argv, env=None, timeout=300, check_rc=True, quiet=False):
    log("$ " + " ".join(argv))
    r = subprocess.run(argv, env=env, capture_output=True, text=True,
                       timeout=timeout)
    out = (r.stdout + r.stderr).strip()
    if out and not quiet:
        log(out[-4000:])
    if check_rc and r.returncode != 0:
        if quiet:
            log(out[-4000:])
        raise stack.TestFailure(f"{argv[0]} exited {r.returncode}")
    return r


class Phases:
    """Wall time of each phase, printed as it ends and summed up at exit."""

    def __init__(self):
        self.done = []

    @contextlib.contextmanager
    def __call__(self, name):
        log(f"== phase {name}")
        start = time.monotonic()
        try:
            yield
        finally:
            secs = time.monotonic() - start
            self.done.append((name, secs))
            log(f"== phase {name}: {secs:.0f} s")

    def summary(self):
        for name, secs in self.done:
            log(f"phase {name:<10} {secs:6.0f} s")
        log(f"total            {sum(s for _, s in self.done):6.0f} s")


def _setns(fd):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def inside(netns_path):
    """Runs this (single-threaded) process in another network namespace."""
    with open("/proc/self/ns/net") as home, open(netns_path) as there:
        _setns(there.fileno())
        try:
            yield
        finally:
            _setns(home.fileno())


class Dockerd:
    """A private dockerd on DIR/data, optionally inside a network namespace
    (`nsenter --net`: `ip netns exec` would remount /sys, and dockerd then
    finds no devices cgroup)."""

    def __init__(self, d, netns_path=None):
        self.d = d
        self.netns_path = netns_path
        self.env = dict(os.environ, DOCKER_HOST=f"unix://{d}/docker.sock")
        self.proc = None

    def answers(self):
        return subprocess.run(["docker", "version", "--format",
                               "{{.Server.Version}}"], env=self.env,
                              capture_output=True, timeout=30).returncode == 0

    def start(self):
        prefix = ["nsenter", f"--net={self.netns_path}"] if self.netns_path else []
        argv = prefix + [
            "dockerd", "--bridge=none", "--iptables=false", "--ip6tables=false",
            "--data-root", f"{self.d}/data", "--exec-root", f"{self.d}/exec",
            "-H", f"unix://{self.d}/docker.sock", "--pidfile", f"{self.d}/pid"]
        log("$ " + " ".join(argv))
        self.log_path = f"{self.d}/dockerd-{int(time.time())}.log"
        with open(self.log_path, "wb") as f:
            self.proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline and self.proc.poll() is None:
            if self.answers():
                log(f"dockerd (pid {self.proc.pid}) answers")
                return True
            time.sleep(1)
        self.stop()
        return False

    def tail(self, n=8):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace").splitlines()[-n:]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        stack.unmount_under(self.d)


def image_size_mb(env, image):
    r = subprocess.run(["docker", "image", "inspect", "-f", "{{.Size}}", image],
                       env=env, capture_output=True, text=True, check=True)
    return int(r.stdout.strip()) / 1e6


def build_images(d, phases):
    """Phase build: duet:latest (+ its build stage and the local base) and the
    test's Prometheus image, with a dockerd in the host's network namespace."""
    engine = Dockerd(d)
    with phases("build"):
        if not engine.start():
            stack.skip("dockerd --bridge=none --iptables=false did not start: "
                       + " | ".join(engine.tail()))
        try:
            build_log = f"{d}/build-image.log"
            argv = [os.path.join(ROOT, "deploy", "docker", "build-image"),
                    "--base", "local", "--local-base", BASE, "--tag", IMAGE]
            log("$ " + " ".join(argv) + f" >{build_log}")
            with open(build_log, "w") as f:
                rc = subprocess.run(argv, env=engine.env, stdout=f,
                                    stderr=subprocess.STDOUT,
                                    timeout=BUDGET.left(1500)).returncode
            with open(build_log, errors="replace") as f:
                lines = f.read().splitlines()
            for line in lines:
                line = re.sub(r"\x1b\[[0-9;]*m", "", line)
                if re.match(r"runtime packages:|debian-root:|build-image:|"
                            r"\s+\S+\s+\d+ MB$", line):
                    log(line)
            if rc != 0:
                log("\n".join(lines[-60:]))
                # The base was bootstrapped and imported, but can the engine
                # run any container at all (namespaces, cgroups)?
                have_base = sh(["docker", "image", "inspect", BASE],
                               env=engine.env, check_rc=False,
                               quiet=True).returncode == 0
                r = sh(["docker", "run", "--rm", "--network", "none", BASE,
                        "true"], env=engine.env, check_rc=False)
                if have_base and r.returncode != 0:
                    stack.skip("the engine cannot run containers: "
                               f"{(r.stdout + r.stderr).strip()[-300:]}")
                raise stack.TestFailure(f"build-image exited {rc}")
            with open(os.path.join(HERE, "prometheus.Dockerfile"), "rb") as f:
                r = subprocess.run(
                    ["docker", "build", "--network", "host", "--build-arg",
                     f"DEBIAN_IMAGE={BASE}", "-t", PROMETHEUS_IMAGE, "-"],
                    env=engine.env, stdin=f, capture_output=True,
                    timeout=BUDGET.left(600))
            if r.returncode != 0:
                log(r.stdout.decode(errors="replace")[-3000:] +
                    r.stderr.decode(errors="replace")[-3000:])
                raise stack.TestFailure("the Prometheus image did not build")
            sizes = {image: image_size_mb(engine.env, image) for image in
                     (BASE, "duet-build:latest", IMAGE, PROMETHEUS_IMAGE)}
            for image, mb in sizes.items():
                log(f"image size: {image:<30} {mb:7.1f} MB")
        finally:
            engine.stop()


def loadgen_totals(out):
    """(total, ok, errors, dropped) from duet-loadgen's summary text."""
    m = re.search(r"^queries\s+(\d+) total, (\d+) ok, (\d+) errors, "
                  r"(\d+) dropped", out, re.M)
    check(m, f"no summary in the loadgen's output:\n{out[-2000:]}")
    return tuple(int(x) for x in m.groups())


def wait_healthy(env, compose, service, count, timeout=90):
    ids = sh(compose + ["ps", "-q", service], env=env,
             quiet=True).stdout.split()
    check(len(ids) == count, f"{len(ids)} {service} containers, want {count}")
    deadline = time.time() + timeout
    for cid in ids:
        while True:
            state = json.loads(sh(["docker", "inspect", cid], env=env,
                                  quiet=True).stdout)[0]["State"]
            health = state.get("Health", {}).get("Status")
            if health != "starting" or time.time() > deadline:
                break
            time.sleep(1)
        log(f"{service} {cid[:12]}: {state['Status']}, health {health}")
        check(health == "healthy", f"{service} {cid[:12]} is {health}")


def in_chroot():
    """True inside the fresh-root test's chroot, or wherever this process's
    / is not init's (when /proc/1/root may be read)."""
    if os.environ.get("DUET_FRESH_ROOT"):
        return True
    try:
        here, init = os.stat("/"), os.stat("/proc/1/root")
    except OSError:
        return False
    return (here.st_dev, here.st_ino) != (init.st_dev, init.st_ino)


def dump_diagnostics(env, compose):
    """Each duet service's log tail and each container's last health checks
    (one service's chatter, Prometheus', must not hide another's)."""
    for service in ("model", "cloud", "edge", "prometheus"):
        sh(compose + ["logs", "--no-color", "--tail", "25", service], env=env,
           check_rc=False)
    for cid in sh(compose + ["ps", "-q"], env=env, check_rc=False,
                  quiet=True).stdout.split():
        r = sh(["docker", "inspect", "-f",
                "{{.Name}} {{.State.Status}} exit {{.State.ExitCode}} "
                "{{json .State.Health}}", cid], env=env, check_rc=False,
               quiet=True)
        log(r.stdout.strip()[-1500:])


def check_prometheus(loadgen_ok):
    """Runs inside the namespace: targets, replicas, dashboard."""
    deadline = time.time() + 60
    while True:
        try:
            stack.http_get(PROM + "/-/ready", timeout=2)
            break
        except OSError:
            check(time.time() < deadline, "Prometheus not ready after 60 s")
            time.sleep(1)
    jobs = ["duet-cloud", "duet-edge", "prometheus"]
    stack.wait_scraped(PROM, jobs, scrapes=3, timeout=60)
    targets = json.loads(stack.http_get(PROM + "/api/v1/targets"))
    active = targets["data"]["activeTargets"]
    for t in active:
        log(f"target {t['labels']['job']:<11} {t['scrapeUrl']:<34} "
            f"{t['health']} {t['lastError']}")
    per_job = {j: [t for t in active if t["labels"]["job"] == j] for j in jobs}
    check(len(per_job["duet-cloud"]) == 2,
          f"{len(per_job['duet-cloud'])} cloud targets, want 2 (DNS SD)")
    check(len(per_job["duet-edge"]) == 1, "no edge target")
    check(all(t["health"] == "up" for t in active),
          "targets not up: " + ", ".join(t["scrapeUrl"] for t in active
                                         if t["health"] != "up"))
    up = stack.prom_query(PROM, "up")["result"]
    check(len(up) == len(active) and
          all(float(s["value"][1]) == 1 for s in up),
          f"up is not 1 for every target: {up}")

    # The edge's split-path queries reached both replicas (the monolithic
    # load goes to one address of cloud:50051 and is left out).
    served = stack.prom_query(
        PROM, 'sum by (instance) (duet_queries_total{side="cloud",'
              'rpc="ScoringSession",code="OK"})')["result"]
    per_replica = {s["metric"]["instance"]: float(s["value"][1])
                   for s in served}
    log(f"ScoringSession queries per cloud replica: {per_replica}")
    check(len(per_replica) == 2 and min(per_replica.values()) > 0,
          f"the edge's queries did not reach both replicas: {per_replica}")
    r = stack.prom_query(PROM, 'sum(duet_queries_total{side="edge",code="OK"})')
    edge_ok = float(r["result"][0]["value"][1]) if r["result"] else 0
    log(f"Prometheus: {edge_ok:.0f} OK edge queries (loadgen: {loadgen_ok})")
    check(edge_ok >= loadgen_ok, "Prometheus saw fewer OK edge queries than "
          "the loadgen made")
    stack.check_dashboard(PROM)


def run_stack(d, netns_path, phases):
    """Phase stack: the compose stack inside the namespace."""
    engine = Dockerd(d, netns_path)
    env = dict(engine.env, DUET_PRESET=PRESET,
               DUET_LOAD_SECONDS=str(LOAD_SECONDS), DUET_LOAD_QPS="30",
               DUET_TEST_PROMETHEUS_IMAGE=PROMETHEUS_IMAGE)
    compose = ["docker-compose", "-p", f"duettest{os.getpid()}",
               "-f", os.path.join(ROOT, "docker-compose.yml"),
               "-f", os.path.join(HERE, "compose.local-prometheus.yml")]
    load = compose + ["--profile", "load", "run", "--rm", "--no-deps", "-T",
                      "loadgen"]
    try:
        with phases("up"):
            check(engine.start(), "dockerd did not start in the namespace: "
                  + " | ".join(engine.tail()))
            sh(compose + ["up", "-d", "--no-build", "--scale", "cloud=2",
                          "model", "cloud", "edge", "prometheus"], env=env)
            wait_healthy(env, compose, "cloud", 2)
            wait_healthy(env, compose, "edge", 1)
            sh(compose + ["ps"], env=env)
        with phases("load"):
            # The baseline beside the split path, so the dashboard's
            # split-vs-monolithic panel has both lines.
            mono = subprocess.Popen(
                load + ["duet-loadgen", "--target", "monolithic", "--addr",
                        "cloud:50051", "--model", f"/models/{PRESET}",
                        "--qps", "10", "--duration_s", str(LOAD_SECONDS),
                        "--progress=false"],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True)
            try:
                edge_out = sh(load, env=env, timeout=LOAD_SECONDS + 120,
                              quiet=True).stdout
                mono_out = mono.communicate(timeout=120)[0]
            finally:
                if mono.poll() is None:
                    mono.kill()
                    mono.wait()
            for what, out in (("edge", edge_out), ("monolithic", mono_out)):
                summary = out[out.find("target "):] if "target " in out else out
                log(f"-- loadgen ({what}):\n{summary.strip()}")
                total, ok, errors, dropped = loadgen_totals(out)
                check(ok > 0 and errors == 0,
                      f"{what} loadgen: {total} queries, {ok} ok, "
                      f"{errors} errors")
            check(mono.returncode == 0, f"monolithic loadgen exited "
                  f"{mono.returncode}")
            edge_ok = loadgen_totals(edge_out)[1]
        with phases("check"):
            time.sleep(5)  # two more scrapes of the final counts
            with inside(netns_path):
                check_prometheus(edge_ok)
    except stack.TestFailure:
        dump_diagnostics(env, compose)
        raise
    finally:
        with phases("down"):
            sh(compose + ["--profile", "load", "down", "-v",
                          "--remove-orphans"], env=env, timeout=180,
               check_rc=False)
            engine.stop()


def main():
    if os.geteuid() != 0:
        stack.skip("needs root (dockerd, network namespaces, debootstrap)")
    for tool, pkg in (("docker", "docker.io"), ("dockerd", "docker.io"),
                      ("docker-compose", "docker-compose"),
                      ("debootstrap", "debootstrap"), ("nsenter", "util-linux"),
                      ("ip", "iproute2")):
        if shutil.which(tool) is None:
            stack.skip(f"{tool} is not installed (Debian package {pkg})")
    # Below the CTest TIMEOUT (tests/deploy_tests.cmake), whose SIGKILL
    # would skip the clean-up.
    global BUDGET  # noqa: PLW0603
    BUDGET = stack.Budget(1650)
    # SIGTERM (kill, a CI job cancelled) still runs the clean-up below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    phases = Phases()
    d = tempfile.mkdtemp(prefix="duet-compose-")
    netns = f"duet-compose-{os.getpid()}"
    try:
        build_images(d, phases)
        if in_chroot():
            # The fresh-root test's chroot (tests/deploy/fresh_root_test.py):
            # the images built, so the set-up is proven; but runc cannot
            # `exec` into a container started from inside a chroot (its
            # chdir to the container's working directory fails), so no
            # HEALTHCHECK could ever pass.
            stack.skip("the images built; the stack cannot run inside a "
                       "chroot (runc exec, and so every HEALTHCHECK, fails "
                       "there)")
        sh(["ip", "netns", "add", netns])
        sh(["ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up"])
        run_stack(d, f"/var/run/netns/{netns}", phases)
    finally:
        still = stack.unmount_under(d)
        if still:
            log(f"left {d} in place: still mounted below it: {still}")
        else:
            shutil.rmtree(d, ignore_errors=True)
        if os.path.exists(f"/var/run/netns/{netns}"):
            subprocess.run(["ip", "netns", "del", netns], check=False)
        phases.summary()


if __name__ == "__main__":
    stack.run(main)
