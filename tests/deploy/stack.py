"""Helpers for the deployment tests: run duet processes and Prometheus on
loopback, wait for them, scrape and query them. Python standard library only.

Every process is started in its own process group and stopped (SIGTERM, then
SIGKILL) when the Stack closes, including on test failure. Ports are picked
free by the kernel, so tests can run concurrently.
"""
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

SKIP = 77  # the tests' SKIP_RETURN_CODE (tests/deploy_tests.cmake)
HOST = "127.0.0.1"


def log(msg):
    print(msg, flush=True)


def skip(reason):
    log(f"SKIPPED: {reason}")
    sys.exit(SKIP)


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode("utf-8")


class TestFailure(Exception):
    pass


class Budget:
    """The time a test may take in all. Long steps take what is left (at
    most `cap`), so the test fails, and cleans up, before CTest's TIMEOUT
    kills it outright."""

    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def left(self, cap=None):
        left = self.end - time.monotonic()
        if left <= 0:
            raise TestFailure("out of time")
        return left if cap is None else min(left, cap)


def mounts_under(d):
    """Mount points strictly below directory d, deepest first."""
    d = os.path.realpath(d)
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return sorted((p for p in points if p.startswith(d + "/")), key=len,
                  reverse=True)


def unmount_under(d):
    """Unmounts everything below d, deepest first (lazily where busy).
    Returns what is still mounted: never delete d while that is not empty."""
    for p in mounts_under(d):
        if subprocess.run(["umount", p], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", p], capture_output=True)
    return mounts_under(d)


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


class Stack:
    """Processes started by one test; a context manager that stops them."""

    def __init__(self, name, bins):
        self.bins = bins  # dict: cloud, edge, model, loadgen, probe -> path
        self.dir = tempfile.mkdtemp(prefix=f"duet-{name}-")
        self.procs = {}  # name -> (Popen, log path)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.stop_all()
        if exc_type is None and not os.environ.get("DUET_KEEP_TEST_DIR"):
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            log(f"test files kept in {self.dir}")
        return False

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def start(self, name, argv):
        log_path = self.path(f"{name}.log")
        f = open(log_path, "wb")
        log(f"start {name}: {' '.join(argv)}")
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        f.close()
        self.procs[name] = (p, log_path)
        return p

    def tail(self, name, n=30):
        _, path = self.procs[name]
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])

    def stop(self, name):
        p, _ = self.procs.pop(name)
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def stop_all(self):
        for name in list(self.procs):
            self.stop(name)

    def alive(self, name):
        return self.procs[name][0].poll() is None

    def wait_serving(self, name, addr, timeout=60):
        """Until `name` answers SERVING on grpc.health.v1 at `addr`."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.alive(name):
                raise TestFailure(f"{name} exited during start-up:\n"
                                  f"{self.tail(name)}")
            r = subprocess.run([self.bins["probe"], "--addr", addr,
                                "--timeout_ms", "500"],
                               stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
            if r.returncode == 0:
                return
            time.sleep(0.3)
        raise TestFailure(f"{name} not SERVING at {addr} after {timeout}s:\n"
                          f"{self.tail(name)}")

    def gen_model(self, preset="tiny", rows_scale=None):
        out = self.path("models", preset)
        argv = [self.bins["model"], "gen", "--preset", preset, "--out", out]
        if rows_scale is not None:
            argv += ["--rows-scale", str(rows_scale)]
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        return out

    def start_cloud(self, name, model, extra=()):
        port, mport = free_port(), free_port()
        self.start(name, [self.bins["cloud"], "--model", model,
                          "--listen", f"{HOST}:{port}",
                          "--metrics_listen", f"{HOST}:{mport}", *extra])
        self.wait_serving(name, f"{HOST}:{port}")
        return f"{HOST}:{port}", f"{HOST}:{mport}"

    def start_edge(self, name, model, cloud_target, extra=()):
        port, mport = free_port(), free_port()
        state = self.path(f"{name}-state")
        os.makedirs(state, exist_ok=True)
        self.start(name, [self.bins["edge"], "--model", model,
                          "--cloud", cloud_target,
                          "--listen", f"{HOST}:{port}",
                          "--metrics_listen", f"{HOST}:{mport}",
                          "--state_dir", state, *extra])
        self.wait_serving(name, f"{HOST}:{port}")
        return f"{HOST}:{port}", f"{HOST}:{mport}"

    def loadgen(self, target, addr, model, seconds, qps, name="loadgen",
                background=False, extra=()):
        """Runs duet-loadgen; returns its parsed --json summary (or the Popen
        when `background`, then call finish_loadgen). Edge load includes
        interactions, so the scratchpad and relay series move too."""
        out = self.path(f"{name}.json")
        argv = [self.bins["loadgen"], "--target", target, "--addr", addr,
                "--model", model, "--qps", str(qps), "--warmup_s", "0.5",
                "--duration_s", str(seconds), "--json", out,
                "--progress=false", "--candidates", "32"]
        if target == "edge":
            argv += ["--interaction_rate", "0.2"]
        argv += list(extra)
        p = self.start(name, argv)
        if background:
            return p
        return self.finish_loadgen(name, seconds + 60)

    def finish_loadgen(self, name, timeout):
        p, _ = self.procs[name]
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TestFailure(f"{name} did not finish in {timeout}s:\n"
                              f"{self.tail(name)}")
        log(self.tail(name, 15))
        check(rc == 0, f"{name} exited with {rc}:\n{self.tail(name)}")
        self.procs.pop(name)
        with open(self.path(f"{name}.json")) as f:
            text = f.read()
        try:
            return json.loads(text)
        except ValueError:
            return text

    def start_prometheus(self, cloud_targets, edge_targets, interval="1s"):
        src = os.path.join(os.path.dirname(__file__), "..", "..", "deploy",
                           "prometheus", "prometheus.local.yml.in")
        with open(src) as f:
            cfg = f.read()
        q = lambda ts: ", ".join(f"'{t}'" for t in ts)
        cfg = (cfg.replace("@SCRAPE_INTERVAL@", interval)
               .replace("@CLOUD_TARGETS@", q(cloud_targets))
               .replace("@EDGE_TARGETS@", q(edge_targets)))
        cfg_path = self.path("prometheus.yml")
        with open(cfg_path, "w") as f:
            f.write(cfg)
        port = free_port()
        self.start("prometheus", [
            "prometheus", f"--config.file={cfg_path}",
            f"--storage.tsdb.path={self.path('prometheus-data')}",
            f"--web.listen-address={HOST}:{port}", "--log.level=warn"])
        base = f"http://{HOST}:{port}"
        deadline = time.time() + 60
        while time.time() < deadline:
            check(self.alive("prometheus"),
                  f"prometheus exited:\n{self.tail('prometheus')}")
            try:
                http_get(base + "/-/ready", timeout=1)
                return base
            except OSError:
                time.sleep(0.3)
        raise TestFailure("prometheus not ready after 60 s")


def prom_query(base, expr):
    url = base + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        body = json.loads(http_get(url))
    except urllib.error.HTTPError as e:
        body = json.loads(e.read().decode("utf-8"))
    if body.get("status") != "success":
        raise TestFailure(f"query failed: {expr}: {body.get('error')}")
    return body["data"]


def wait_scraped(base, jobs, scrapes=3, timeout=30):
    """Until every job's targets are up and have `scrapes` samples of `up`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        ok = True
        for job in jobs:
            r = prom_query(base, f'count_over_time(up{{job="{job}"}}[1m]) '
                                 f'and up{{job="{job}"}} == 1')["result"]
            if not r or min(float(s["value"][1]) for s in r) < scrapes:
                ok = False
        if ok:
            return
        time.sleep(0.5)
    targets = http_get(base + "/api/v1/targets")
    raise TestFailure(f"targets of {jobs} not scraped {scrapes}x in "
                      f"{timeout}s: {targets}")


DASHBOARD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                         "deploy", "grafana", "dashboards", "duet.json")


def dashboard_targets():
    """(panel title, refId, expression) of every query of the dashboard."""
    with open(DASHBOARD, encoding="utf-8") as f:
        d = json.load(f)
    for p in d["panels"]:
        for t in p.get("targets", []):
            yield p["title"], t["refId"], t["expr"]


def check_dashboard(base, rate_interval="30s"):
    """Evaluates every expression of the Grafana dashboard (deploy/grafana/
    dashboards/duet.json) through the Prometheus at `base`, `rate_interval`
    standing in for Grafana's $__rate_interval, and fails naming each one that
    returns no data. Expressions with only NaN values (no events of that kind
    in the window) are noted, not failed."""
    empty, nan, total = [], [], 0
    for title, ref, expr in dashboard_targets():
        total += 1
        q = expr.replace("$__rate_interval", rate_interval)
        data = prom_query(base, q)
        result = data["result"]
        if data["resultType"] == "vector" and not result:
            empty.append(f"{title} [{ref}]: {q}")
            continue
        values = [float(r["value"][1]) for r in result]
        shown = ", ".join(
            f"{r['metric'] or '{}'}={float(r['value'][1]):.4g}"
            for r in result[:6])
        log(f"ok  {title} [{ref}]: {len(result)} series: {shown}")
        if not any(finite(v) for v in values):
            nan.append(f"{title} [{ref}]")
    log(f"{total} dashboard expressions, {len(empty)} empty, "
        f"{len(nan)} with no finite value")
    for n in nan:
        log(f"note: only NaN (no events of that kind in the window): {n}")
    check(not empty, "dashboard expressions with no data:\n  " +
          "\n  ".join(empty))


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metric_sum(text, name, **labels):
    """Sum of the samples of `name` in Prometheus text whose labels include
    `labels` (a value may be a compiled regex)."""
    total = 0.0
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if not m or m.group(1) != name:
            continue
        have = dict(LABEL.findall(m.group(2) or ""))
        if all((v.fullmatch(have.get(k, "")) if hasattr(v, "fullmatch")
                else have.get(k) == v) for k, v in labels.items()):
            total += float(m.group(3))
    return total


def binaries(argv):
    """--cloud PATH --edge PATH ... from the command line (tests/deploy_tests.cmake)."""
    out = {}
    it = iter(argv)
    for a in it:
        if not a.startswith("--"):
            raise SystemExit(f"unexpected argument {a}")
        out[a[2:]] = next(it)
    return out


def run(main):
    """Runs main(); TestFailure -> exit 1 with the message."""
    try:
        main()
    except TestFailure as e:
        log(f"FAILED: {e}")
        sys.exit(1)
    log("PASSED")


def finite(x):
    return not (math.isnan(x) or math.isinf(x))
