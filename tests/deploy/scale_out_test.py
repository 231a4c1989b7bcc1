#!/usr/bin/env python3
"""Scale-out: one duet-edge spreads its queries over two duet-cloud replicas
given as one multi-address target (--cloud ipv4:127.0.0.1:P1,127.0.0.1:P2,
round_robin): after a short load, both clouds' duet_queries_total of the split
path (ScoringSession, Score) with code OK must be above zero. The edge rotates
its streams every ~1 s: round_robin places a stream on a backend that is READY,
and the channel is READY at its first connection, so lanes that open before the
second connection is up all land on cloud1 until they rotate.
    scale_out_test.py --cloud BIN --edge BIN --model BIN --loadgen BIN --probe BIN
"""
import os
import re
import sys

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack  # noqa: E402
from stack import check, log  # noqa: E402

SPLIT = re.compile("ScoringSession|Score")


def main():
    bins = stack.binaries(sys.argv[1:])
    with stack.Stack("scale-out", bins) as s:
        model = s.gen_model("tiny")
        c1, m1 = s.start_cloud("cloud1", model)
        c2, m2 = s.start_cloud("cloud2", model)
        target = f"ipv4:{c1},{c2}"
        edge, edge_metrics = s.start_edge(
            "edge", model, target, extra=["--cloud_stream_max_age_s", "1"])
        s.loadgen("edge", edge, model, seconds=5, qps=40, name="load-edge")
        counts = {}
        for name, addr in (("cloud1", m1), ("cloud2", m2)):
            text = stack.http_get(f"http://{addr}/metrics")
            counts[name] = stack.metric_sum(text, "duet_queries_total",
                                            side="cloud", rpc=SPLIT, code="OK")
        edge_ok = stack.metric_sum(
            stack.http_get(f"http://{edge_metrics}/metrics"),
            "duet_queries_total", side="edge", code="OK")
        log(f"edge --cloud {target}: edge OK queries {edge_ok:.0f}, "
            f"split-path OK queries per cloud {counts}")
        check(edge_ok > 0, "the edge answered no query OK")
        for name, n in counts.items():
            check(n > 0, f"{name} received no split-path query: {counts}")


if __name__ == "__main__":
    stack.run(main)
