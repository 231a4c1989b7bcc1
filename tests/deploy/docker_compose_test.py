#!/usr/bin/env python3
"""docker-compose.yml for real, where a Docker engine can be had: builds the
runtime image from this build's binaries (deploy/docker/build-host-image; no
registry is reachable), brings up model, cloud, edge and prometheus with host
networking (tests/deploy/compose.hostnet.yml), waits for the HEALTHCHECKs
(duet-health-probe), runs the loadgen service (profile "load") and checks that
Prometheus scraped both processes and saw the queries.
    docker_compose_test.py --build DIR --probe BIN
Uses the engine at DOCKER_HOST (or the default socket) when one answers;
otherwise, as root, starts `dockerd --bridge=none --iptables=false` on a
private socket and stops it afterwards. Exits 77 (skipped), printing
"SKIPPED: <reason>", when no engine can be had or it cannot run containers.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack  # noqa: E402
from stack import check, log  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def sh(argv, env=None, timeout=300, check_rc=True):
    log("$ " + " ".join(argv))
    r = subprocess.run(argv, env=env, capture_output=True, text=True,
                       timeout=timeout)
    out = (r.stdout + r.stderr).strip()
    if out:
        log(out[-4000:])
    if check_rc and r.returncode != 0:
        raise stack.TestFailure(f"{argv[0]} exited {r.returncode}")
    return r


def engine_answers(env):
    return subprocess.run(["docker", "info"], env=env, capture_output=True,
                          timeout=30).returncode == 0


class Engine:
    """A reachable Docker engine: the ambient one or a dockerd we start."""

    def __init__(self):
        self.env = dict(os.environ)
        self.proc = None
        self.dir = None

    def __enter__(self):
        if engine_answers(self.env):
            log("using the running Docker engine")
            return self
        if os.geteuid() != 0:
            stack.skip("no Docker engine answers and starting dockerd needs "
                       "root")
        self.dir = tempfile.mkdtemp(prefix="duet-dockerd-")
        sock = os.path.join(self.dir, "docker.sock")
        self.env["DOCKER_HOST"] = f"unix://{sock}"
        log_path = os.path.join(self.dir, "dockerd.log")
        with open(log_path, "wb") as f:
            self.proc = subprocess.Popen(
                ["dockerd", "--bridge=none", "--iptables=false",
                 "--ip6tables=false", "-H", f"unix://{sock}",
                 "--data-root", os.path.join(self.dir, "data"),
                 "--exec-root", os.path.join(self.dir, "exec"),
                 "--pidfile", os.path.join(self.dir, "dockerd.pid")],
                stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                break
            if engine_answers(self.env):
                log(f"started dockerd (pid {self.proc.pid}) on {sock}")
                return self
            time.sleep(1)
        with open(log_path, "rb") as f:
            tail = f.read().decode("utf-8", "replace").splitlines()[-5:]
        self.__exit__(None, None, None)
        stack.skip("dockerd --bridge=none --iptables=false did not start: " +
                   " | ".join(tail))

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.dir:
            # dockerd leaves its default network namespace mounted.
            netns = os.path.join(self.dir, "exec", "netns", "default")
            if os.path.ismount(netns):
                subprocess.run(["umount", netns], check=False)
            shutil.rmtree(self.dir, ignore_errors=True)
        return False


def strip_ports(config):
    """`docker-compose config` output without the services' `ports` lists."""
    out, skipping = [], False
    for line in config.splitlines():
        if line == "    ports:":
            skipping = True
            continue
        if skipping and line.startswith("    - "):
            continue
        skipping = False
        out.append(line)
    return "\n".join(out) + "\n"


def main():
    args = stack.binaries(sys.argv[1:])
    for tool in ("docker", "docker-compose"):
        if shutil.which(tool) is None:
            stack.skip(f"{tool} is not installed (Debian packages docker.io, "
                       "docker-compose)")
    if shutil.which("dockerd") is None and not engine_answers(dict(os.environ)):
        stack.skip("no Docker engine answers and dockerd is not installed")
    if shutil.which("prometheus") is None:
        stack.skip("Debian's prometheus is not installed: the host-built "
                   "image has no Prometheus to run")
    with Engine() as engine, tempfile.TemporaryDirectory() as tmp:
        env = engine.env
        tag = f"duet-deploytest:{os.getpid()}"
        r = sh([os.path.join(ROOT, "deploy", "docker", "build-host-image"),
                "--build", args["build"], "--tag", tag], env=env,
               timeout=600, check_rc=False)
        if r.returncode != 0:
            stack.skip("the engine could not build an image from the host's "
                       f"binaries: {(r.stdout + r.stderr).strip()[-300:]}")
        # Can this engine run a container at all (namespaces, cgroups)?
        r = sh(["docker", "run", "--rm", "--network", "host", tag,
                "duet-health-probe", "--help"], env=env, timeout=120,
               check_rc=False)
        if r.returncode not in (0, 1):
            sh(["docker", "rmi", "-f", tag], env=env, check_rc=False)
            stack.skip("the engine cannot run containers: "
                       f"{(r.stdout + r.stderr).strip()[-300:]}")

        ports = {k: stack.free_port() for k in (
            "DUET_CLOUD_PORT", "DUET_CLOUD_METRICS_PORT", "DUET_EDGE_PORT",
            "DUET_EDGE_METRICS_PORT", "DUET_PROMETHEUS_PORT")}
        with open(os.path.join(ROOT, "deploy", "prometheus",
                               "prometheus.local.yml.in")) as f:
            cfg = (f.read().replace("@SCRAPE_INTERVAL@", "1s")
                   .replace("@CLOUD_TARGETS@",
                            f"'127.0.0.1:{ports['DUET_CLOUD_METRICS_PORT']}'")
                   .replace("@EDGE_TARGETS@",
                            f"'127.0.0.1:{ports['DUET_EDGE_METRICS_PORT']}'"))
        cfg_path = os.path.join(tmp, "prometheus.yml")
        with open(cfg_path, "w") as f:
            f.write(cfg)
        os.chmod(tmp, 0o755)
        os.chmod(cfg_path, 0o644)
        env.update({k: str(v) for k, v in ports.items()})
        env.update({"DUET_IMAGE": tag, "DUET_PRESET": "tiny",
                    "DUET_ROWS_SCALE": "1", "DUET_LOAD_SECONDS": "6",
                    "DUET_LOAD_QPS": "30", "DUET_PROMETHEUS_CONFIG": cfg_path})
        project = f"duetdeploytest{os.getpid()}"
        # docker-compose.yml + the host-network override, resolved. Compose
        # merges lists, so the override cannot drop the base file's `ports`,
        # which Docker refuses with network_mode host (there is nothing to
        # publish: the services listen on the host's loopback already).
        resolved = sh(["docker-compose", "-f",
                       os.path.join(ROOT, "docker-compose.yml"), "-f",
                       os.path.join(ROOT, "tests", "deploy",
                                    "compose.hostnet.yml"), "config"],
                      env=env).stdout
        resolved_path = os.path.join(tmp, "docker-compose.hostnet.yml")
        with open(resolved_path, "w") as f:
            f.write(strip_ports(resolved))
        compose = ["docker-compose", "-p", project, "-f", resolved_path]
        try:
            sh(compose + ["up", "-d", "--no-build", "model", "cloud", "edge",
                          "prometheus"], env=env, timeout=300)
            # `up` waited for the cloud's HEALTHCHECK (the edge depends on
            # it being healthy); wait for the edge's too.
            for svc in ("cloud", "edge"):
                cid = sh(compose + ["ps", "-q", svc], env=env).stdout.strip()
                deadline = time.time() + 90
                while True:
                    state = json.loads(subprocess.run(
                        ["docker", "inspect", cid], env=env,
                        capture_output=True, text=True).stdout)[0]["State"]
                    health = state.get("Health", {}).get("Status")
                    if health != "starting" or time.time() > deadline:
                        break
                    time.sleep(1)
                log(f"{svc}: {state['Status']}, health {health}")
                check(health == "healthy", f"{svc} is {health}")
            sh(compose + ["--profile", "load", "run", "--rm", "--no-deps",
                          "loadgen"], env=env, timeout=180)
            prom = f"http://127.0.0.1:{ports['DUET_PROMETHEUS_PORT']}"
            stack.wait_scraped(prom, ["duet-cloud", "duet-edge"], scrapes=3,
                               timeout=60)
            time.sleep(2)
            r = stack.prom_query(prom, 'sum(duet_queries_total{side="edge",code="OK"})')
            n = float(r["result"][0]["value"][1]) if r["result"] else 0
            log(f"Prometheus saw {n:.0f} OK edge queries")
            check(n > 0, "Prometheus saw no OK edge query")
            r = stack.prom_query(prom, 'sum(duet_queries_total{side="cloud",code="OK"})')
            check(r["result"] and float(r["result"][0]["value"][1]) > 0,
                  "Prometheus saw no OK cloud query")
        except stack.TestFailure:
            sh(compose + ["logs", "--no-color", "--tail", "30"], env=env,
               check_rc=False)
            raise
        finally:
            sh(compose + ["--profile", "load", "down", "-v",
                          "--remove-orphans"], env=env, timeout=120,
               check_rc=False)
            sh(["docker", "rmi", "-f", tag], env=env, check_rc=False)


if __name__ == "__main__":
    stack.run(main)
