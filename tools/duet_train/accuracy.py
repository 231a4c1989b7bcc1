"""duet-accuracy: what the split and the int8 user top MLP cost in accuracy,
measured on held-out users of the planted log (docs/ACCURACY.md).

For every preset, data seed and split (personalized, paper) it trains with
duet-train's API (both splits on the very same generated log), exports the
model directory, runs `duet-model quantize`, `score` and `inspect --json`, and
computes AUC and log loss of every evaluation (monolithic fp32, split fp32,
split int8, torch), NDCG@10 against the planted click probability, and the
cost of the split. Progress goes to stderr, the markdown tables to stdout and
DIR/accuracy.md, everything to DIR/accuracy.json. Exit status: 0 on success,
1 on an error (a failed tool or agreement check), 2 on bad usage.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from . import __main__ as train_cli
from . import accuracy_report, config as cfg, data, export, metrics
from . import safetensors, train
from .accuracy_report import (SPLITS, TOP_K, aggregate, best_single_order,
                              format_tables, score_metrics)
from .model import DuetModel

# Widths that keep one training run under about 30 s on a 2-core machine.
DEFAULT_WIDTH_SCALE = {"tiny": 1.0}
OTHER_WIDTH_SCALE = 0.25
PAPER_INT8_IMPACT_PCT = 0.06

DESCRIPTION = """\
Trains each preset with both splits (personalized, paper) on the same
synthetic log for --repeats data seeds, quantizes and scores the held-out
users with duet-model, and reports AUC, log loss and NDCG@10 against the
planted truth, the int8 impact, and the split's cost (upstream bytes, edge
and cloud MACs). Writes DIR/accuracy.json, DIR/accuracy.md and the model
directories under DIR/models; prints the tables."""


# ---------------------------------------------------------------- arguments

def _width_scales(text):
    """'rm2=0.5,tiny=1' -> {'rm2': 0.5, 'tiny': 1.0}."""
    out = {}
    for part in filter(None, text.split(",")):
        name, eq, value = part.partition("=")
        try:
            scale = float(value)
        except ValueError:
            scale = 0.0
        if not eq or not name or not scale > 0:
            raise argparse.ArgumentTypeError(
                f"{part!r} is not PRESET=SCALE with a positive SCALE")
        out[name] = scale
    return out


def _seed_count(text):
    value = train_cli._positive(int)(text)
    if value > 20:
        raise argparse.ArgumentTypeError(f"{text} repeats: at most 20")
    return value


def parse_args(argv):
    p = argparse.ArgumentParser(prog="duet-accuracy", description=DESCRIPTION,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--presets", default="tiny,rm2",
                   help="comma-separated presets (default tiny,rm2)")
    p.add_argument("--out", default="accuracy-results", metavar="DIR",
                   help="results directory (default ./accuracy-results)")
    p.add_argument("--duet-model", metavar="PATH",
                   help="duet-model binary (default $DUET_MODEL, then PATH)")
    p.add_argument("--seed", type=int, default=1,
                   help="first data seed; runs use SEED .. SEED+REPEATS-1 "
                   "(default 1)")
    p.add_argument("--repeats", type=_seed_count, default=5,
                   help="data seeds per preset (default 5)")
    p.add_argument("--width-scale", type=_width_scales, default={},
                   metavar="PRESET=S,...",
                   help="layer width scale per preset (default tiny=1, "
                   f"others {OTHER_WIDTH_SCALE:g})")
    p.add_argument("--epochs", type=train_cli._positive(int),
                   help="training epochs (default duet-train's)")
    p.add_argument("--lr", type=train_cli._positive(float),
                   help="MLP learning rate (default duet-train's)")
    p.add_argument("--embedding-lr", type=train_cli._positive(float),
                   help="table learning rate (default duet-train's)")
    p.add_argument("--threads", type=train_cli._positive(int), default=1,
                   help="torch threads (default 1: reproducible)")
    args = p.parse_args(argv)
    args.presets = [s for s in args.presets.split(",") if s]
    if not args.presets:
        p.error("--presets is empty")
    unknown = set(args.width_scale) - set(args.presets)
    if unknown:
        p.error(f"--width-scale names {', '.join(sorted(unknown))}, not in "
                f"--presets")
    return args


def width_scale(args, preset):
    return args.width_scale.get(
        preset, DEFAULT_WIDTH_SCALE.get(preset, OTHER_WIDTH_SCALE))


# What the report's cost tables read from `duet-model inspect --json`.
COST_FIELDS = ("split_depth", "user_vector_values", "edge_mlp_macs_per_query",
               "cloud_mlp_macs_per_candidate", "user_top_mlp_int8_bytes",
               "ranking_depends_on_user")


# ------------------------------------------------------------------ running

class DuetModelTool:
    """Runs the duet-model binary; every call raises RuntimeError with the
    tool's stderr when it fails and returns (stdout, seconds)."""

    def __init__(self, path):
        self.path = path

    def run(self, *args):
        cmd = [self.path, *args]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              check=False)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: "
                               f"{proc.stderr.strip()}")
        return proc.stdout, seconds

    def cost(self, model_dir):
        info = json.loads(self.run("inspect", model_dir, "--json")[0])
        cost = {k: info[k] for k in COST_FIELDS if k in info}
        cost["user_top_mlp_int8_bytes"] = \
            info["parts"]["user_top_mlp_int8"]["bytes"]
        cost["user_top_mlp_fp32_bytes"] = \
            info["parts"]["user_top_mlp_fp32"]["bytes"]
        cost["cloud_mlp_macs_per_candidate_recompute"] = \
            info["cloud_mlp_macs_per_candidate_recompute"]
        return cost

    def preset_cost(self, preset, split, out_dir):
        """The cost of the preset at full width: MACs and upstream bytes do
        not depend on table rows, so a generated model with tiny tables
        (random weights, seconds to write) tells them."""
        model_dir = os.path.join(out_dir, f"{preset}-{split}")
        self.run("gen", "--preset", preset, "--split", split, "--rows-scale",
                 "0.0001", "--out", model_dir)
        return self.cost(model_dir)


def _train_args(args, preset, split, seed):
    """duet-train's own arguments (and so its defaults) for one model."""
    argv = ["--preset", preset, "--split", split, "--seed", str(seed),
            "--out", "-", "--width-scale", str(width_scale(args, preset)),
            "--threads", str(args.threads)]
    for flag in ("epochs", "lr", "embedding_lr"):
        if getattr(args, flag):
            argv += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    if args.duet_model:
        argv += ["--duet-model", args.duet_model]
    return train_cli.parse_args(argv)


def _generate(targs, c):
    return data.generate(
        targs.seed, targs.items, c["num_static_dense"],
        c["num_dynamic_dense"], max(t["history_length"]
                                    for t in c["user_tables"]),
        train_users=targs.users, queries_per_user=targs.queries_per_user,
        train_candidates=targs.train_candidates,
        heldout_users=targs.heldout_users,
        heldout_candidates=targs.candidates,
        model=data.ClickModel(latent_dim=targs.genres))


def baselines(d):
    """The model-free references on d's held-out queries."""
    h = d.heldout
    pop = metrics.PopularityBaseline(d.world.phi.shape[0], d.train.candidates,
                                     d.train.labels)
    single = best_single_order(d.world, h)
    return {
        "planted_auc": metrics.auc(h.labels, h.relevance),
        "planted_log_loss": metrics.log_loss(h.labels, h.relevance),
        "popularity_auc": metrics.auc(h.labels, pop.score(h.candidates)),
        "planted_ndcg10": float(np.nanmean(metrics.ndcg_at_k(
            h.relevance, h.relevance, TOP_K))),
        "popularity_ndcg10": float(np.nanmean(metrics.ndcg_at_k(
            h.relevance, pop.score(h.candidates), TOP_K))),
        "best_single_order_ndcg10": float(np.nanmean(metrics.ndcg_at_k(
            h.relevance, single[h.candidates], TOP_K))),
    }


def train_and_export(targs, c, d, model_dir, log):
    """Trains one model on d and writes its directory; returns seconds of
    training and export, and train.towers() with the restarts."""
    torch.manual_seed(targs.seed)
    start = time.perf_counter()
    model = DuetModel(c)
    options = train.TrainOptions(
        epochs=targs.epochs, batch_size=targs.batch_size, lr=targs.lr,
        embedding_lr=targs.embedding_lr, grad_clip=targs.grad_clip,
        restarts=targs.restarts, seed=targs.seed)
    stats = train.train(model, d, options, log)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    os.makedirs(model_dir, exist_ok=True)
    export.write_heldout(model, d.heldout,
                         os.path.join(model_dir, "heldout.safetensors"))
    final = dict(c, name=f"{c['name']}-trained", version=1, seed=targs.seed,
                 description=f"Trained by duet-accuracy: preset {c['name']},"
                 f" split {targs.split}, data seed {targs.seed}, width scale "
                 f"{targs.width_scale:g}, {targs.epochs} epochs, lr "
                 f"{targs.lr:g}, embedding lr {targs.embedding_lr:g}")
    export.write_model_dir(model, final, model_dir)
    export.write_calibration(
        model, d.train, os.path.join(model_dir, "calibration.safetensors"),
        targs.calibration_samples, targs.seed)
    tower = dict(train.towers(model, d.heldout),
                 restarts=stats[-1].restarts)
    return train_s, time.perf_counter() - start, tower


def run_one(args, tool, preset, split, seed, c, d, base, log):
    targs = _train_args(args, preset, split, seed)
    model_dir = os.path.join(args.out, "models", f"{preset}-{split}-s{seed}")
    train_s, export_s, tower = train_and_export(targs, c, d, model_dir, log)
    _, quantize_s = tool.run(
        "quantize", model_dir, "--calibration",
        os.path.join(model_dir, "calibration.safetensors"))
    scores_path = os.path.join(model_dir, "scores.safetensors")
    _, score_s = tool.run(
        "score", model_dir, "--queries",
        os.path.join(model_dir, "heldout.safetensors"), "--out", scores_path)
    scores, _ = safetensors.read(scores_path)
    held, _ = safetensors.read(os.path.join(model_dir, "heldout.safetensors"))
    for name in ("candidates", "labels", "relevance"):
        if not np.array_equal(held[name], getattr(d.heldout, name)):
            raise RuntimeError(f"{model_dir}: held-out {name} differ from the "
                               "generated log")
    s = score_metrics(d.heldout.labels, d.heldout.relevance, {
        "monolithic_fp32": scores["monolithic_fp32"],
        "split_fp32": scores["split_fp32"],
        "split_int8": scores["split_int8"],
        "split_int8_items": scores["split_int8_items"],
        "torch_ctr": held["torch_ctr"]})
    per_query = s["evals"]["split_fp32"].pop("ndcg_per_query")
    for e in s["evals"].values():
        e.pop("ndcg_per_query", None)
    return {"preset": preset, "split": split, "seed": seed,
            "width_scale": targs.width_scale, "model_dir": model_dir,
            "evals": s["evals"], "agreement": s["agreement"],
            "baselines": base, "cost": tool.cost(model_dir),
            "towers": tower,
            "seconds": {"data": base["seconds_data"], "train": train_s,
                        "export": export_s, "quantize": quantize_s,
                        "score": score_s},
            "ndcg_per_query": per_query}


def _check_same_inputs(preset, configs):
    """Both splits must read the same log: same features and catalog."""
    keys = ("num_static_dense", "num_dynamic_dense", "user_tables",
            "catalog")
    first, *rest = configs.values()
    for c in rest:
        for k in keys:
            if c[k] != first[k]:
                raise ValueError(f"{preset}: the splits differ in {k} "
                                 f"({first[k]} vs {c[k]}); they cannot "
                                 "share a log")


def run(args, log):
    path = cfg.find_duet_model(args.duet_model)
    if path is None:
        raise RuntimeError("cannot find duet-model: pass --duet-model PATH "
                           "or set DUET_MODEL")
    args.duet_model = path
    tool = DuetModelTool(path)
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    runs = []
    start = time.perf_counter()
    for preset in args.presets:
        for seed in range(args.seed, args.seed + args.repeats):
            # One log per preset and seed that both splits train on (the
            # catalog seed follows the data seed, as in duet-train).
            cs = {s: train_cli.architecture(_train_args(args, preset, s,
                                                        seed))
                  for s in SPLITS}
            _check_same_inputs(preset, cs)
            t = time.perf_counter()
            d = _generate(_train_args(args, preset, SPLITS[0], seed),
                          cs[SPLITS[0]])
            base = dict(baselines(d), seconds_data=time.perf_counter() - t)
            for split in SPLITS:
                log(f"== {preset} {split} seed {seed}")
                r = run_one(args, tool, preset, split, seed, cs[split], d,
                            base, log)
                log(f"   AUC {r['evals']['split_fp32']['auc']:.4f} NDCG@10 "
                    f"{r['evals']['split_fp32']['ndcg10']:.4f}, train "
                    f"{r['seconds']['train']:.1f} s")
                runs.append(r)
    agg = aggregate(runs)
    agg["recipe"] = {k: getattr(_train_args(args, "tiny", "paper", args.seed),
                                k)
                     for k in ("epochs", "lr", "embedding_lr", "grad_clip",
                               "restarts", "batch_size",
                               "users", "items", "heldout_users",
                               "candidates")}
    agg["preset_costs"] = [
        {"preset": preset, "split": split,
         "cost": tool.preset_cost(preset, split,
                                  os.path.join(args.out, "presets"))}
        for preset in args.presets for split in SPLITS]
    tables = format_tables(agg)
    for r in runs:
        r["ndcg_per_query"] = [float(x) for x in r["ndcg_per_query"]]
    result = {
        "command": "tools/duet-accuracy " + " ".join(sys.argv[1:]),
        "duet_model": path, "seeds": list(range(args.seed,
                                                args.seed + args.repeats)),
        "threads": args.threads, "torch": torch.__version__,
        "numpy": np.__version__, "cpu": _cpu_name(), "cores": os.cpu_count(),
        "total_seconds": time.perf_counter() - start,
        "paper_int8_impact_pct": PAPER_INT8_IMPACT_PCT,
        "agreement_tolerance": accuracy_report.AGREEMENT_TOL,
        "summary": agg, "runs": runs}
    _write(os.path.join(args.out, "accuracy.json"),
           json.dumps(result, indent=1) + "\n")
    _write(os.path.join(args.out, "accuracy.md"), tables)
    return tables, result


def _cpu_name():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _write(path, text):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    try:
        tables, result = run(args, log)
    except (RuntimeError, ValueError, OSError) as e:
        print(f"duet-accuracy: {e}", file=sys.stderr)
        return 1
    print(tables, end="")
    print(f"\n{len(result['runs'])} models in "
          f"{result['total_seconds']:.0f} s; {args.out}/accuracy.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
