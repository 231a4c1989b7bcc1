#!/usr/bin/env python3
"""The local stack end to end: duet-cloud and duet-edge on loopback with a
tiny model, split and monolithic load, a real Prometheus server scraping both,
then EVERY expression of the Grafana dashboard (deploy/grafana/dashboards/
duet.json) evaluated through Prometheus's HTTP API must return data.
    local_stack_test.py --cloud BIN --edge BIN --model BIN --loadgen BIN --probe BIN
Skips (exit 77) when Debian's prometheus server is not installed.
"""
import os
import shutil
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack  # noqa: E402
from stack import check, log  # noqa: E402

RATE_INTERVAL = "30s"  # stands in for Grafana's $__rate_interval


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

        stack.check_dashboard(prom, RATE_INTERVAL)

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
