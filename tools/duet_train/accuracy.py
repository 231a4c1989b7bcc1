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
from . import config as cfg, data, export, metrics, safetensors, train
from .model import DuetModel

SPLITS = ("personalized", "paper")
# Widths that keep one training run under about 30 s on a 2-core machine.
DEFAULT_WIDTH_SCALE = {"tiny": 1.0}
OTHER_WIDTH_SCALE = 0.25
# Split fp32 against monolithic fp32, and torch against both: the same math
# in another order of summation.
AGREEMENT_TOL = 1e-5
TOP_K = 10
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


# ------------------------------------------------------------ pure metrics

def best_single_order(world, heldout):
    """Per-item score of the best order that is the same for every user, by
    the planted truth: the mean click probability of the item over the
    held-out queries (their users and contexts). The ceiling, up to the
    choice of averaging, of a model whose ranking cannot depend on the user
    (the paper split)."""
    items = np.arange(world.phi.shape[0])
    all_items = np.broadcast_to(items, (len(heldout), len(items)))
    p = 1.0 / (1.0 + np.exp(-world.click_logit(heldout.user, heldout.context,
                                                all_items)))
    return p.mean(axis=0)


def top_k_overlap(a, b, k=TOP_K):
    """Mean over queries of |top-k(a) & top-k(b)| / k for scores [Q, N]."""
    k = min(k, a.shape[1])
    ta = np.argsort(-a, axis=1, kind="mergesort")[:, :k]
    tb = np.argsort(-b, axis=1, kind="mergesort")[:, :k]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(ta, tb)]))


def evaluation_metrics(labels, relevance, ctr):
    """AUC and log loss on the clicks, NDCG@10 against the planted truth
    (mean, and the per-query array under 'ndcg_per_query')."""
    per_query = metrics.ndcg_at_k(relevance, ctr, TOP_K)
    return {"auc": metrics.auc(labels, ctr),
            "log_loss": metrics.log_loss(labels, ctr),
            "ndcg10": float(np.nanmean(per_query)),
            "ndcg_per_query": per_query}


def score_metrics(labels, relevance, scores):
    """Everything that compares one model's evaluations. `scores` maps
    monolithic_fp32, split_fp32, split_int8 (optional) and torch_ctr to
    CTRs [Q, N]. Raises ValueError when split fp32 or torch differ from
    monolithic fp32 by more than AGREEMENT_TOL."""
    mono = scores["monolithic_fp32"].astype(np.float64)
    out = {"evals": {}, "agreement": {}}
    for name, ctr in scores.items():
        out["evals"][name] = evaluation_metrics(labels, relevance, ctr)
    a = out["agreement"]
    for name in ("split_fp32", "torch_ctr"):
        a[f"{name}_vs_monolithic_max_abs"] = float(
            np.max(np.abs(scores[name] - mono)))
        if a[f"{name}_vs_monolithic_max_abs"] > AGREEMENT_TOL:
            raise ValueError(
                f"{name} differs from monolithic_fp32 by "
                f"{a[f'{name}_vs_monolithic_max_abs']:.3g}, expected at most "
                f"{AGREEMENT_TOL:g}")
    if "split_int8" in scores:
        fp32, int8 = scores["split_fp32"], scores["split_int8"]
        diff = np.abs(int8.astype(np.float64) - fp32)
        e8, e32 = out["evals"]["split_int8"], out["evals"]["split_fp32"]
        a["int8_mean_abs"] = float(diff.mean())
        a["int8_max_abs"] = float(diff.max())
        a["int8_top10_overlap"] = top_k_overlap(fp32, int8)
        a["int8_delta_auc_pct"] = 100.0 * (e8["auc"] - e32["auc"]) / e32["auc"]
        a["int8_delta_log_loss"] = e8["log_loss"] - e32["log_loss"]
        a["int8_delta_ndcg10"] = e8["ndcg10"] - e32["ndcg10"]
    return out


def summary(values):
    """mean, sample sd (0 for one value), min, max and the values."""
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()),
            "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()),
            "values": [float(x) for x in v]}


def paired_gap(personalized, paper):
    """Per-query NDCG@10 of the two splits on the same queries: mean
    difference, its standard error and how often each wins."""
    d = np.asarray(personalized, np.float64) - np.asarray(paper, np.float64)
    d = d[~np.isnan(d)]
    return {"mean": float(d.mean()),
            "stderr": float(d.std(ddof=1) / np.sqrt(len(d))),
            "wins": float(np.mean(d > 0)), "losses": float(np.mean(d < 0)),
            "queries": int(len(d))}


# Flat per-run quantities that aggregate() summarizes: name -> path.
RUN_FIELDS = {
    "auc_monolithic_fp32": ("evals", "monolithic_fp32", "auc"),
    "auc_split_fp32": ("evals", "split_fp32", "auc"),
    "auc_split_int8": ("evals", "split_int8", "auc"),
    "auc_torch": ("evals", "torch_ctr", "auc"),
    "auc_popularity": ("baselines", "popularity_auc"),
    "auc_planted": ("baselines", "planted_auc"),
    "log_loss_monolithic_fp32": ("evals", "monolithic_fp32", "log_loss"),
    "log_loss_split_fp32": ("evals", "split_fp32", "log_loss"),
    "log_loss_split_int8": ("evals", "split_int8", "log_loss"),
    "log_loss_torch": ("evals", "torch_ctr", "log_loss"),
    "log_loss_planted": ("baselines", "planted_log_loss"),
    "ndcg10_split_fp32": ("evals", "split_fp32", "ndcg10"),
    "ndcg10_split_int8": ("evals", "split_int8", "ndcg10"),
    "ndcg10_popularity": ("baselines", "popularity_ndcg10"),
    "ndcg10_best_single_order": ("baselines", "best_single_order_ndcg10"),
    "ndcg10_planted": ("baselines", "planted_ndcg10"),
    "split_vs_monolithic_max_abs": ("agreement",
                                    "split_fp32_vs_monolithic_max_abs"),
    "torch_vs_monolithic_max_abs": ("agreement",
                                    "torch_ctr_vs_monolithic_max_abs"),
    "int8_mean_abs": ("agreement", "int8_mean_abs"),
    "int8_max_abs": ("agreement", "int8_max_abs"),
    "int8_top10_overlap": ("agreement", "int8_top10_overlap"),
    "int8_delta_auc_pct": ("agreement", "int8_delta_auc_pct"),
    "int8_delta_log_loss": ("agreement", "int8_delta_log_loss"),
    "int8_delta_ndcg10": ("agreement", "int8_delta_ndcg10"),
    "seconds_data": ("seconds", "data"),
    "seconds_train": ("seconds", "train"),
    "seconds_export": ("seconds", "export"),
    "seconds_quantize": ("seconds", "quantize"),
    "seconds_score": ("seconds", "score"),
}
COST_FIELDS = ("split_depth", "user_vector_values", "edge_mlp_macs_per_query",
               "cloud_mlp_macs_per_candidate", "user_top_mlp_int8_bytes",
               "ranking_depends_on_user")


def _get(run, path):
    for key in path:
        run = run[key]
    return run


def learned(run):
    """Whether both towers of the trained network carry information: some
    unit of u varies over held-out users and some unit of v_j over items.
    A tower whose ReLUs all died (or stay constant) makes the split
    irrelevant: such a run measures the training recipe, not the split."""
    t = run["towers"]
    return t["user_units_varying"] > 0 and t["item_units_varying"] > 0


def aggregate(runs):
    """Groups runs by (preset, split): summaries of RUN_FIELDS over seeds,
    the cost (the same for every seed; ValueError if not), and for each
    preset the gap personalized - paper per seed and per query."""
    groups = {}
    for r in runs:
        groups.setdefault((r["preset"], r["split"]), []).append(r)
    out = {"models": [], "gaps": []}
    for (preset, split), rs in groups.items():
        costs = {json.dumps(r["cost"], sort_keys=True) for r in rs}
        if len(costs) != 1:
            raise ValueError(f"{preset} {split}: the cost differs between "
                             "seeds")
        out["models"].append({
            "preset": preset, "split": split,
            "width_scale": rs[0]["width_scale"],
            "seeds": [r["seed"] for r in rs], "cost": rs[0]["cost"],
            "not_learned_seeds": [r["seed"] for r in rs if not learned(r)],
            "towers": [r["towers"] for r in rs],
            **{f: summary([_get(r, p) for r in rs])
               for f, p in RUN_FIELDS.items()}})
    for preset in dict.fromkeys(p for p, _ in groups):
        pers = {r["seed"]: r for r in groups.get((preset, "personalized"), [])}
        paper = {r["seed"]: r for r in groups.get((preset, "paper"), [])}
        seeds = sorted(set(pers) & set(paper))
        if not seeds:
            continue
        per_seed = [paired_gap(pers[s]["ndcg_per_query"],
                               paper[s]["ndcg_per_query"]) for s in seeds]
        both = [i for i, s in enumerate(seeds)
                if learned(pers[s]) and learned(paper[s])]
        cp, cq = pers[seeds[0]]["cost"], paper[seeds[0]]["cost"]
        out["gaps"].append({
            "preset": preset, "seeds": seeds,
            "ndcg10": summary([g["mean"] for g in per_seed]),
            "seeds_both_learned": [seeds[i] for i in both],
            "ndcg10_both_learned": summary([per_seed[i]["mean"]
                                            for i in both]) if both else None,
            "auc": summary([_get(pers[s], RUN_FIELDS["auc_split_fp32"]) -
                            _get(paper[s], RUN_FIELDS["auc_split_fp32"])
                            for s in seeds]),
            "per_query": per_seed,
            "upstream_bytes_ratio": cp["user_vector_values"] /
            cq["user_vector_values"],
            "cloud_macs_ratio": cp["cloud_mlp_macs_per_candidate"] /
            cq["cloud_mlp_macs_per_candidate"],
            "edge_macs_ratio": cp["edge_mlp_macs_per_query"] /
            cq["edge_mlp_macs_per_query"]})
    return out


# ------------------------------------------------------------------- tables

def _pm(s, digits=4):
    """'mean ± sd' of a summary (just the mean for a single seed)."""
    mean, sd = s["mean"], s["sd"]
    if len(s["values"]) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _name(m):
    return f"{m['preset']} (×{m['width_scale']:g})"


def format_tables(agg):
    """The report's markdown tables from aggregate()'s result."""
    ms = agg["models"]
    n = max((len(m["seeds"]) for m in ms), default=0)
    parts = [f"Mean ± sample sd over {n} data seed(s); held-out users only."]
    if agg.get("recipe"):
        parts[0] += " Training: " + ", ".join(
            f"{k.replace('_', ' ')} {v:g}" for k, v in agg["recipe"].items())
        parts[0] += "."
    parts.append("### Accuracy on held-out clicks\n\n" + _table(
        ["model", "split", "AUC mono fp32", "AUC split fp32",
         "AUC split int8", "AUC torch", "AUC popularity", "AUC planted",
         "log loss fp32",
         "log loss int8", "log loss planted"],
        [[_name(m), m["split"], _pm(m["auc_monolithic_fp32"]),
          _pm(m["auc_split_fp32"]), _pm(m["auc_split_int8"]),
          _pm(m["auc_torch"]), _pm(m["auc_popularity"]),
          _pm(m["auc_planted"]),
          _pm(m["log_loss_split_fp32"]), _pm(m["log_loss_split_int8"]),
          _pm(m["log_loss_planted"])] for m in ms]))
    parts.append("### Precision: split and int8 against monolithic fp32\n\n"
                 + _table(
                     ["model", "split", "max \\|split − mono\\| fp32",
                      "max \\|torch − mono\\|", "int8 mean \\|ΔCTR\\|",
                      "int8 max \\|ΔCTR\\|", "int8 ΔAUC (%) [min, max]",
                      "int8 Δlog loss", "int8 top-10 overlap"],
                     [[_name(m), m["split"],
                       f"{m['split_vs_monolithic_max_abs']['max']:.1e}",
                       f"{m['torch_vs_monolithic_max_abs']['max']:.1e}",
                       _pm(m["int8_mean_abs"]),
                       f"{m['int8_max_abs']['max']:.4f}",
                       _pm(m["int8_delta_auc_pct"], 3) +
                       " [{min:+.3f}, {max:+.3f}]".format(
                           **m["int8_delta_auc_pct"]),
                       _pm(m["int8_delta_log_loss"], 5),
                       _pm(m["int8_top10_overlap"], 3)] for m in ms]))
    parts.append("### NDCG@10 against the planted click probability\n\n" +
                 _table(["model", "split", "split fp32", "split int8",
                         "popularity", "best single order", "planted"],
                        [[_name(m), m["split"], _pm(m["ndcg10_split_fp32"]),
                          _pm(m["ndcg10_split_int8"]),
                          _pm(m["ndcg10_popularity"]),
                          _pm(m["ndcg10_best_single_order"]),
                          _pm(m["ndcg10_planted"], 3)] for m in ms]))
    if agg["gaps"]:
        parts.append("### Personalized − paper, same log\n\n" + _table(
            ["model", "ΔNDCG@10 (all seeds)", "ΔNDCG@10 (both learned)",
             "ΔNDCG@10 per seed ± stderr",
             "queries won / lost", "ΔAUC", "upstream bytes",
             "edge MACs/query", "cloud MACs/candidate"],
            [[g["preset"], _pm(g["ndcg10"]),
              (_pm(g["ndcg10_both_learned"]) +
               f" (seeds {', '.join(map(str, g['seeds_both_learned']))})")
              if g["ndcg10_both_learned"] else "no seed",
              ", ".join(f"{q['mean']:+.3f}±{q['stderr']:.3f}"
                        for q in g["per_query"]),
              ", ".join(f"{100 * q['wins']:.0f}/{100 * q['losses']:.0f} %"
                        for q in g["per_query"]),
              _pm(g["auc"]), f"×{g['upstream_bytes_ratio']:.2f}",
              f"×{g['edge_macs_ratio']:.2f}",
              f"×{g['cloud_macs_ratio']:.2f}"] for g in agg["gaps"]]))
    parts.append("### Every run\n\n" + _table(
        ["model", "seed", "split", "AUC split fp32", "AUC popularity",
         "NDCG@10 split fp32", "NDCG@10 popularity", "u units varying",
         "v units varying", "both towers learned"],
        [[_name(m), seed, m["split"], f"{auc:.4f}", f"{pop:.4f}",
          f"{ndcg:.4f}", f"{pn:.4f}",
          f"{t['user_units_varying']}/{t['user_units']}",
          f"{t['item_units_varying']}/{t['item_units']}",
          "no" if seed in m["not_learned_seeds"] else "yes"]
         for m in ms for seed, auc, pop, ndcg, pn, t in zip(
             m["seeds"], m["auc_split_fp32"]["values"],
             m["auc_popularity"]["values"],
             m["ndcg10_split_fp32"]["values"],
             m["ndcg10_popularity"]["values"], m["towers"])]))
    parts.append("### Cost of the split (as trained)\n\n" + _table(
        ["model", "split", "split depth", "ranking per user",
         "upstream bytes (int8 u)", "edge MLP MACs/query",
         "cloud MLP MACs/candidate", "edge user top int8 bytes"],
        [[_name(m), m["split"], m["cost"]["split_depth"],
          "yes" if m["cost"]["ranking_depends_on_user"] else "no",
          m["cost"]["user_vector_values"],
          f"{m['cost']['edge_mlp_macs_per_query']:,}",
          f"{m['cost']['cloud_mlp_macs_per_candidate']:,}",
          f"{m['cost']['user_top_mlp_int8_bytes']:,}"] for m in ms]))
    if agg.get("preset_costs"):
        parts.append("### Cost of the split at the presets' full width "
                     "(`duet-model gen`, untrained)\n\n" + _table(
                         ["preset", "split", "split depth",
                          "upstream bytes (int8 u)", "edge MLP MACs/query",
                          "cloud MLP MACs/candidate",
                          "edge user top int8 bytes"],
                         [[p["preset"], p["split"], p["cost"]["split_depth"],
                           p["cost"]["user_vector_values"],
                           f"{p['cost']['edge_mlp_macs_per_query']:,}",
                           f"{p['cost']['cloud_mlp_macs_per_candidate']:,}",
                           f"{p['cost']['user_top_mlp_int8_bytes']:,}"]
                          for p in agg["preset_costs"]]))
    parts.append("### Seconds per model\n\n" + _table(
        ["model", "split", "data", "train", "export", "quantize", "score"],
        [[_name(m), m["split"]] + [_pm(m[f"seconds_{s}"], 2) for s in
                                   ("data", "train", "export", "quantize",
                                    "score")] for m in ms]))
    return "\n\n".join(parts) + "\n"


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


def varying_units(x, tol=1e-6):
    """Columns of x [rows, units] whose values differ between rows."""
    return int(np.sum(np.std(np.asarray(x, np.float64), axis=0) > tol))


def towers(model, heldout):
    """How many units of u vary over the held-out users and of v_j over the
    catalog, out of how many (dead or constant towers show as 0)."""
    model.eval()
    with torch.no_grad():
        static, context, history, _ = train.as_tensors(heldout)
        u = model.user_vector(static, context, history).numpy()
        v = model.item_vector(torch.arange(
            model.config["catalog"]["num_items"])).numpy()
    return {"user_units_varying": varying_units(u), "user_units": u.shape[1],
            "item_units_varying": varying_units(v), "item_units": v.shape[1]}


def train_and_export(targs, c, d, model_dir, log):
    """Trains one model on d and writes its directory; returns seconds of
    training and export, and towers()."""
    torch.manual_seed(targs.seed)
    start = time.perf_counter()
    model = DuetModel(c)
    options = train.TrainOptions(
        epochs=targs.epochs, batch_size=targs.batch_size, lr=targs.lr,
        embedding_lr=targs.embedding_lr, seed=targs.seed)
    train.train(model, d, options, log)
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
    return train_s, time.perf_counter() - start, towers(model, d.heldout)


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
        "split_int8": scores["split_int8"], "torch_ctr": held["torch_ctr"]})
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
                     for k in ("epochs", "lr", "embedding_lr", "batch_size",
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
        "agreement_tolerance": AGREEMENT_TOL,
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
