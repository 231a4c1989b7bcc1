#!/usr/bin/env python3
"""The README's two commands on a freshly bootstrapped Debian 12, as a new
user's machine has it: nothing installed by hand, so every package the set-up
forgets fails here instead of hiding behind this machine's earlier installs.

    fresh_root_test.py [--full] [--committed] [--keep] [--budget S] [--work DIR]

Bootstraps a minimal root from Debian's archive (tools/debian-root), puts a
clone of this repository in it (HEAD plus the working tree's changes to
tracked files, so a developer tests what they would commit), chroots and runs
  1. the main job in full: deploy/run-local (set-up, Release build, model,
     cloud + edge + Prometheus on free loopback ports, load test, results);
  2. the test command's set-up, format check and configure, and one test
     binary: tools/run-tests --only mlp_test;
or, with --full, the whole test command instead of 2 (tens of minutes; run
before resolving a change to the set-up, not in CI). Prints each phase's
time and the packages the set-up installed. Exits 77 (skipped) with the
reason when not root, when debootstrap is missing, or inside a fresh root
already.
"""
import argparse
import os
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

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SRC = "/src"  # the clone's path inside the fresh root
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def sh(argv, timeout, cwd=None, env=None, capture=False):
    log("$ " + " ".join(argv))
    r = subprocess.run(argv, cwd=cwd, env=env, timeout=timeout, text=True,
                       stdout=subprocess.PIPE if capture else None,
                       stderr=subprocess.STDOUT if capture else None)
    if r.returncode != 0:
        if capture and r.stdout:
            log(r.stdout[-4000:])
        raise stack.TestFailure(f"{argv[0]} exited {r.returncode}")
    return r.stdout if capture else ""


class FreshRoot:
    """A bootstrapped root, itself a mount point (as / is on a machine;
    dockerd inside needs it) with /proc, /sys and /dev mounted; torn down on
    exit unless `keep`: every process whose root is in it killed, everything
    mounted below it unmounted, and its files removed only when nothing is
    mounted there any more."""

    def __init__(self, work, keep, budget):
        self.work = work
        self.dir = os.path.join(work, "root")
        self.keep = keep
        self.budget = budget

    def __enter__(self):
        return self

    def bootstrap(self):
        sh([os.path.join(ROOT, "tools", "debian-root"), self.dir],
           timeout=self.budget.left(900))
        sh(["mount", "--bind", self.dir, self.dir], timeout=30)
        sh(["mount", "-t", "proc", "proc", os.path.join(self.dir, "proc")],
           timeout=30)
        # /sys and /dev with what is mounted below them (cgroups, pts, shm),
        # as a booted machine has them; slaves, so unmounting them here
        # never propagates back to the host.
        for target in ("sys", "dev"):
            path = os.path.join(self.dir, target)
            sh(["mount", "--rbind", "/" + target, path], timeout=30)
            sh(["mount", "--make-rslave", path], timeout=30)
        # The machine's resolver, as an installed system has its own.
        shutil.copy("/etc/resolv.conf", os.path.join(self.dir, "etc"))

    def packages(self):
        out = self.run("dpkg-query -W -f='${Package}\\n'", cap=60,
                       capture=True)
        return set(out.split())

    def run(self, script, cap, capture=False):
        env = {"PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8",
               "TERM": "dumb", "DUET_FRESH_ROOT": "1"}
        return sh(["chroot", self.dir, "/bin/bash", "-c", script],
                  self.budget.left(cap), env=env, capture=capture)

    def kill_processes(self):
        real = os.path.realpath(self.dir)
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                if os.path.realpath(f"/proc/{pid}/root") == real:
                    os.kill(int(pid), 9)
            except OSError:
                pass

    def __exit__(self, *exc):
        self.kill_processes()
        time.sleep(1)  # let the killed processes release their mounts
        still = stack.unmount_under(self.work)
        if still:
            log(f"NOT removing {self.work}: still mounted below it: {still}")
        elif self.keep:
            log(f"fresh root kept in {self.dir}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)
        return False


def export_source(dest, committed):
    """A clone of HEAD with the working tree's changes to tracked files
    (unless `committed`)."""
    sh(["git", "clone", "--quiet", "--no-hardlinks", ROOT, dest], timeout=300)
    diff = subprocess.run(["git", "-C", ROOT, "diff", "HEAD", "--binary"],
                          capture_output=True, check=True).stdout
    if diff and not committed:
        log(f"applying the working tree's uncommitted changes "
            f"({len(diff)} bytes of diff)")
        subprocess.run(["git", "-C", dest, "apply", "--index"], input=diff,
                       check=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true",
                        help="run the whole test command inside")
    parser.add_argument("--committed", action="store_true",
                        help="HEAD only, without uncommitted changes")
    parser.add_argument("--keep", action="store_true",
                        help="keep the root afterwards (for debugging)")
    parser.add_argument("--budget", type=float, help="seconds the whole "
                        "test may take (default 2500, 7000 with --full)")
    parser.add_argument("--work", help="parent directory of the root "
                        "(default: a new directory under /var/tmp)")
    args = parser.parse_args()
    if os.environ.get("DUET_FRESH_ROOT"):
        stack.skip("already inside a fresh root")
    if os.geteuid() != 0:
        stack.skip("bootstrapping and chrooting need root")
    for tool in ("debootstrap", "chroot", "git"):
        if shutil.which(tool) is None:
            stack.skip(f"{tool} is not installed (tools/setup-deps --tests "
                       "installs it)")
    work = tempfile.mkdtemp(prefix="duet-fresh-root-", dir=args.work or
                            "/var/tmp")
    # Below the CTest TIMEOUT (tests/fresh_root_tests.cmake), whose SIGKILL
    # would skip the clean-up.
    budget = stack.Budget(args.budget or (7000 if args.full else 2500))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    times = []

    def phase(name, fn):
        start = time.monotonic()
        fn()
        times.append((name, time.monotonic() - start))
        log(f"== {name}: {times[-1][1]:.0f} s")

    with FreshRoot(work, args.keep, budget) as root:
        phase("bootstrap (tools/debian-root)", root.bootstrap)
        base = root.packages()
        phase("clone", lambda: export_source(root.dir + SRC,
                                                 args.committed))
        ports = {k: stack.free_port() for k in (
            "cloud-port", "cloud-metrics-port", "edge-port",
            "edge-metrics-port", "prometheus-port")}
        flags = " ".join(f"--{k} {v}" for k, v in ports.items())
        # The README's main job, as a new user runs it (on free ports: the
        # root shares this machine's network namespace).
        phase("main job (deploy/run-local)", lambda: root.run(
            f"cd {SRC} && deploy/run-local --duration 3 {flags}", cap=2400))
        after_main = root.packages()
        check(os.path.exists(root.dir + SRC + "/out/loadgen/edge.json"),
              "run-local wrote no load results")
        if args.full:
            phase("test command (tools/run-tests)", lambda: root.run(
                f"cd {SRC} && tools/run-tests", cap=7000))
        else:
            phase("test command, one binary (tools/run-tests --only "
                  "mlp_test)", lambda: root.run(
                      f"cd {SRC} && tools/run-tests --only mlp_test",
                      cap=2400))
        after_tests = root.packages()
        log(f"set-up installed {len(after_main - base)} packages for the "
            f"main job and {len(after_tests - after_main)} more for the "
            f"tests")
    log("fresh root: " + ", ".join(f"{n} {t:.0f} s" for n, t in times))


if __name__ == "__main__":
    stack.run(main)
