#!/usr/bin/env python3
"""The local stack end to end: duet-cloud and duet-edge on loopback with a
tiny model, split and monolithic load, a real Prometheus server scraping both,
then EVERY expression of the Grafana dashboard (deploy/grafana/dashboards/
duet.json) evaluated through Prometheus's HTTP API must return data.
    local_stack_test.py --cloud BIN --edge BIN --model BIN --loadgen BIN --probe BIN
Skips (exit 77) when Debian's prometheus server is not installed.
"""
import json
import os
import shutil
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack  # noqa: E402
from stack import check, log  # noqa: E402

DASHBOARD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                         "deploy", "grafana", "dashboards", "duet.json")
RATE_INTERVAL = "30s"  # stands in for Grafana's $__rate_interval


def dashboard_targets():
    with open(DASHBOARD, encoding="utf-8") as f:
        d = json.load(f)
    for p in d["panels"]:
        for t in p.get("targets", []):
            yield p["title"], t["refId"], t["expr"]


def main():
    if shutil.which("prometheus") is None:
        stack.skip("Debian's prometheus server is not installed "
                   "(tools/setup-deps --tests installs it)")
    bins = stack.binaries(sys.argv[1:])
    with stack.Stack("local-stack", bins) as s:
        model = s.gen_model("tiny")
        cloud, cloud_metrics = s.start_cloud("cloud", model)
        edge, edge_metrics = s.start_edge("edge", model, cloud)
        prom = s.start_prometheus([cloud_metrics], [edge_metrics])
        log(f"prometheus at {prom}")
        stack.wait_scraped(prom, ["duet-cloud", "duet-edge"], scrapes=2)

        # Split load through the edge and the monolithic baseline on the cloud,
        # at the same time, while Prometheus scrapes every second.
        s.loadgen("edge", edge, model, seconds=8, qps=40, name="load-edge",
                  background=True)
        s.loadgen("monolithic", cloud, model, seconds=8, qps=20,
                  name="load-mono", background=True)
        s.finish_loadgen("load-edge", 90)
        s.finish_loadgen("load-mono", 90)
        time.sleep(3)  # a few more scrapes after the load
        stack.wait_scraped(prom, ["duet-cloud", "duet-edge"], scrapes=8)

        empty, nan, total = [], [], 0
        for title, ref, expr in dashboard_targets():
            total += 1
            q = expr.replace("$__rate_interval", RATE_INTERVAL)
            data = stack.prom_query(prom, q)
            result = data["result"]
            if data["resultType"] == "vector" and not result:
                empty.append(f"{title} [{ref}]: {q}")
                continue
            values = [float(r["value"][1]) for r in result]
            shown = ", ".join(
                f"{r['metric'] or '{}'}={float(r['value'][1]):.4g}"
                for r in result[:6])
            log(f"ok  {title} [{ref}]: {len(result)} series: {shown}")
            if not any(stack.finite(v) for v in values):
                nan.append(f"{title} [{ref}]")
        log(f"{total} dashboard expressions, {len(empty)} empty, "
            f"{len(nan)} with no finite value")
        for n in nan:
            log(f"note: only NaN (no events of that kind in the window): {n}")
        check(not empty, "dashboard expressions with no data:\n  " +
              "\n  ".join(empty))

        # The headline numbers must be real, not NaN.
        def scalar(expr):
            r = stack.prom_query(prom, expr.replace("$__rate_interval",
                                                    RATE_INTERVAL))["result"]
            return [float(x["value"][1]) for x in r]
        for expr, what in [
            ('sum(rate(duet_queries_total{side="edge",code="OK"}[$__rate_interval]))',
             "edge OK queries/s"),
            ('sum(rate(duet_queries_total{side="cloud",rpc="MonolithicScore",code="OK"}[$__rate_interval]))',
             "cloud monolithic queries/s"),
            ('histogram_quantile(0.99, sum by (le) (rate(duet_query_duration_seconds_bucket{side="edge",stage="total"}[$__rate_interval])))',
             "edge p99"),
            ("sum(rate(duet_uplink_bytes_total[$__rate_interval]))", "uplink bytes/s"),
        ]:
            v = scalar(expr)
            log(f"{what}: {v}")
            check(v and all(stack.finite(x) and x > 0 for x in v),
                  f"{what} is not a positive number: {v} ({expr})")


if __name__ == "__main__":
    stack.run(main)
