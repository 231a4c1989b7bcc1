"""duet-accuracy's report: per-model metrics from the evaluations' CTRs,
aggregation of the runs over seeds and the markdown tables (pure functions of
numpy arrays and dicts; accuracy.py runs the models and calls them).
"""
import json

import numpy as np

from . import metrics

SPLITS = ("personalized", "paper")
# Split fp32 against monolithic fp32, and torch against both: the same math
# in another order of summation.
AGREEMENT_TOL = 1e-5
TOP_K = 10


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


# Quantized evaluations (duet-model score's outputs) and the prefix of
# their impact against split fp32: the int8 user top MLP, and int8 item
# tables (duet-cloud --item_embeddings int8).
QUANTIZED = {"split_int8": "int8", "split_int8_items": "int8_items"}


def score_metrics(labels, relevance, scores):
    """Everything that compares one model's evaluations. `scores` maps
    monolithic_fp32, split_fp32, split_int8 and split_int8_items (both
    optional) and torch_ctr to CTRs [Q, N]. Raises ValueError when split
    fp32 or torch differ from monolithic fp32 by more than AGREEMENT_TOL."""
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
    fp32, e32 = scores["split_fp32"], out["evals"]["split_fp32"]
    for name, prefix in QUANTIZED.items():
        if name not in scores:
            continue
        diff = np.abs(scores[name].astype(np.float64) - fp32)
        e8 = out["evals"][name]
        a[f"{prefix}_mean_abs"] = float(diff.mean())
        a[f"{prefix}_max_abs"] = float(diff.max())
        a[f"{prefix}_top10_overlap"] = top_k_overlap(fp32, scores[name])
        a[f"{prefix}_delta_auc_pct"] = \
            100.0 * (e8["auc"] - e32["auc"]) / e32["auc"]
        a[f"{prefix}_delta_log_loss"] = e8["log_loss"] - e32["log_loss"]
        a[f"{prefix}_delta_ndcg10"] = e8["ndcg10"] - e32["ndcg10"]
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
    "int8_items_mean_abs": ("agreement", "int8_items_mean_abs"),
    "int8_items_max_abs": ("agreement", "int8_items_max_abs"),
    "int8_items_top10_overlap": ("agreement", "int8_items_top10_overlap"),
    "int8_items_delta_auc_pct": ("agreement", "int8_items_delta_auc_pct"),
    "int8_items_delta_log_loss": ("agreement", "int8_items_delta_log_loss"),
    "seconds_data": ("seconds", "data"),
    "seconds_train": ("seconds", "train"),
    "seconds_export": ("seconds", "export"),
    "seconds_quantize": ("seconds", "quantize"),
    "seconds_score": ("seconds", "score"),
}


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
    parts.append("### int8 item tables (duet-cloud --item_embeddings int8) "
                 "against split fp32\n\n" + _table(
                     ["model", "split", "mean \\|ΔCTR\\|", "max \\|ΔCTR\\|",
                      "ΔAUC (%) [min, max]", "Δlog loss",
                      "top-10 overlap"],
                     [[_name(m), m["split"], _pm(m["int8_items_mean_abs"]),
                       f"{m['int8_items_max_abs']['max']:.4f}",
                       _pm(m["int8_items_delta_auc_pct"], 3) +
                       " [{min:+.3f}, {max:+.3f}]".format(
                           **m["int8_items_delta_auc_pct"]),
                       _pm(m["int8_items_delta_log_loss"], 5),
                       _pm(m["int8_items_top10_overlap"], 3)] for m in ms]))
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
         "v units varying", "both towers learned", "restarts"],
        [[_name(m), seed, m["split"], f"{auc:.4f}", f"{pop:.4f}",
          f"{ndcg:.4f}", f"{pn:.4f}",
          f"{t['user_units_varying']}/{t['user_units']}",
          f"{t['item_units_varying']}/{t['item_units']}",
          "no" if seed in m["not_learned_seeds"] else "yes",
          t.get("restarts", 0)]
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
