#!/usr/bin/env python3
"""Memory-growth soak: duet-cloud and duet-edge under repeated load must not
grow. Runs ROUNDS rounds of mixed load (edge Recommend with interactions and
the cloud's MonolithicScore, concurrently), samples each process's VmRSS
after every round, and requires the growth from the end of the warm-up
rounds to the last round to stay under GROWTH_BOUND_KIB. Caches are bounded
by construction (item cache entries, relay cache, primitive cache per M), so
after warm-up RSS should be flat; a leak of even 100 bytes per query would
show as > 1 MiB over the ~12k queries sent here.
    memory_soak_test.py --cloud BIN --edge BIN --model BIN --loadgen BIN --probe BIN
"""
import os
import sys

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack  # noqa: E402
from stack import check, log  # noqa: E402

ROUNDS = 6
WARMUP_ROUNDS = 2
SECONDS_PER_ROUND = 4
QPS = 250
GROWTH_BOUND_KIB = 4096


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise stack.TestFailure(f"no VmRSS for pid {pid}")


def main():
    bins = stack.binaries(sys.argv[1:])
    with stack.Stack("soak", bins) as s:
        model = s.gen_model("rm2", rows_scale=0.001)
        cloud, _ = s.start_cloud("cloud", model,
                                 extra=["--item_cache_entries", "2000"])
        edge, _ = s.start_edge("edge", model, cloud)
        pids = {"cloud": s.procs["cloud"][0].pid, "edge": s.procs["edge"][0].pid}
        samples = {name: [rss_kib(pid)] for name, pid in pids.items()}
        sent = 0
        for r in range(ROUNDS):
            mono = s.loadgen("monolithic", cloud, model, SECONDS_PER_ROUND,
                             QPS // 5, name=f"mono{r}", background=True)
            summary = s.loadgen("edge", edge, model, SECONDS_PER_ROUND, QPS,
                                name=f"edge{r}")
            mono_summary = s.finish_loadgen(f"mono{r}", SECONDS_PER_ROUND + 60)
            del mono
            for sm in (summary, mono_summary):
                check(sm["queries"]["errors"] == 0,
                      f"round {r}: errors during the soak: {sm['queries']}")
                sent += sm["queries"]["ok"]
            for name, pid in pids.items():
                samples[name].append(rss_kib(pid))
            log(f"round {r + 1}/{ROUNDS}: RSS KiB " +
                ", ".join(f"{n} {v[-1]}" for n, v in samples.items()))
        for name, v in samples.items():
            growth = v[-1] - v[WARMUP_ROUNDS]
            log(f"{name}: RSS start {v[0]} KiB, after warm-up {v[WARMUP_ROUNDS]}"
                f" KiB, end {v[-1]} KiB, growth {growth} KiB over "
                f"{ROUNDS - WARMUP_ROUNDS} rounds ({sent} queries in all)")
            check(growth <= GROWTH_BOUND_KIB,
                  f"{name} grew {growth} KiB after warm-up (bound "
                  f"{GROWTH_BOUND_KIB} KiB): {v}")


if __name__ == "__main__":
    stack.run(main)
