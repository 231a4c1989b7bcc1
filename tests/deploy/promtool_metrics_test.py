#!/usr/bin/env python3
"""`promtool check metrics` (Prometheus's linter: naming, units, _total
counters, help text) passes on the /metrics output of duet-cloud and
duet-edge, taken after a short load so every histogram and labelled series
has samples.
    promtool_metrics_test.py --cloud BIN --edge BIN --model BIN --loadgen BIN --probe BIN
Skips (exit 77) when promtool (Debian package prometheus) is not installed.
"""
import os
import shutil
import subprocess
import sys

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack  # noqa: E402
from stack import check, log  # noqa: E402


def main():
    if shutil.which("promtool") is None:
        stack.skip("promtool is not installed (Debian package prometheus; "
                   "tools/setup-deps --tests installs it)")
    bins = stack.binaries(sys.argv[1:])
    with stack.Stack("promtool", bins) as s:
        model = s.gen_model("tiny")
        cloud, cloud_metrics = s.start_cloud("cloud", model)
        edge, edge_metrics = s.start_edge("edge", model, cloud)
        s.loadgen("edge", edge, model, seconds=3, qps=30, name="load-edge")
        s.loadgen("monolithic", cloud, model, seconds=2, qps=20,
                  name="load-mono")
        problems = []
        for name, addr in (("duet-cloud", cloud_metrics),
                           ("duet-edge", edge_metrics)):
            text = stack.http_get(f"http://{addr}/metrics")
            families = sorted({l.split()[2] for l in text.splitlines()
                               if l.startswith("# TYPE ")})
            log(f"{name}: {len(families)} metric families: "
                f"{', '.join(families)}")
            r = subprocess.run(["promtool", "check", "metrics"], input=text,
                               text=True, capture_output=True)
            out = (r.stdout + r.stderr).strip()
            log(f"{name}: promtool check metrics -> exit {r.returncode}"
                f"{': ' + out if out else ''}")
            if r.returncode != 0 or out:
                problems.append(f"{name}: {out or 'exit %d' % r.returncode}")
        check(not problems, "promtool check metrics:\n" + "\n".join(problems))


if __name__ == "__main__":
    stack.run(main)
