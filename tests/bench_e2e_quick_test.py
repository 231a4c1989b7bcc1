#!/usr/bin/env python3
"""Runs `bench/e2e --quick` against this build and checks what it writes:
results.csv parses with the expected columns and configurations, results.md
holds a Markdown table, and every PNG is a real PNG image. No timing
assertion: the figures themselves are the benchmark's business."""
import argparse
import csv
import glob
import os
import subprocess
import sys
import tempfile

ap = argparse.ArgumentParser()
ap.add_argument("--root", required=True)
ap.add_argument("--build", required=True)
args = ap.parse_args()

with tempfile.TemporaryDirectory(prefix="duet_bench_") as out:
    cmd = [sys.executable, os.path.join(args.root, "bench/e2e"), "--quick",
           "--build", args.build, "--out", out,
           "--models", os.path.join(out, "models")]
    print("running:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, timeout=900)
    runs = [d for d in glob.glob(os.path.join(out, "*"))
            if os.path.isfile(os.path.join(d, "results.csv"))]
    assert len(runs) == 1, f"expected one run directory in {out}, found {runs}"
    run = runs[0]

    with open(os.path.join(run, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    assert rows, "results.csv has no rows"
    configs = {r.get("config") or r.get("configuration") for r in rows}
    for want in ("monolithic", "split", "split_cache"):
        assert want in configs, f"results.csv lacks configuration {want}: {configs}"
    presets = {r["preset"] for r in rows}
    assert {"rm1", "rm4"} <= presets, f"--quick presets missing: {presets}"

    md = open(os.path.join(run, "results.md")).read()
    assert "|---" in md or "| ---" in md, "results.md has no Markdown table"

    pngs = glob.glob(os.path.join(run, "*.png"))
    assert len(pngs) >= 2, f"expected the latency and throughput plots, got {pngs}"
    for p in pngs:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", f"{p} is not a PNG"
        assert os.path.getsize(p) > 2000, f"{p} is suspiciously small"
    print(f"OK: {len(rows)} CSV rows, {len(pngs)} plots in {run}")
