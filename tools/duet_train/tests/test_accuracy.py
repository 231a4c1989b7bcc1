"""The accuracy benchmark's pure parts on fabricated inputs: argument
parsing, the agreement checks, aggregation over seeds and the tables. The
benchmark itself (minutes of training) runs as tools/duet-accuracy, never
here."""
import os
import subprocess

import numpy as np
import pytest

from duet_train import accuracy, accuracy_report, data, train
from conftest import TOOLS

WRAPPER = os.path.join(TOOLS, "duet-accuracy")


def test_help_exits_0():
    proc = subprocess.run([WRAPPER, "--help"], capture_output=True, text=True,
                          check=False, timeout=60)
    assert proc.returncode == 0
    assert "usage: duet-accuracy" in proc.stdout
    assert "--presets" in proc.stdout and "--repeats" in proc.stdout


@pytest.mark.parametrize("argv, message", [
    (["--repeats", "0"], "must be positive"),
    (["--width-scale", "rm2"], "PRESET=SCALE"),
    (["--width-scale", "rm2=-1"], "PRESET=SCALE"),
    (["--presets", "tiny", "--width-scale", "rm2=0.5"], "not in --presets"),
    (["--presets", ","], "--presets is empty"),
    (["--split", "paper"], "unrecognized"),
])
def test_bad_usage_exits_2(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        accuracy.parse_args(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_defaults_and_width_scales():
    args = accuracy.parse_args([])
    assert args.presets == ["tiny", "rm2"] and args.repeats == 5
    assert accuracy.width_scale(args, "tiny") == 1.0
    assert accuracy.width_scale(args, "rm2") == 0.25
    args = accuracy.parse_args(["--presets", "rm2,rm5",
                                "--width-scale", "rm2=0.5"])
    assert accuracy.width_scale(args, "rm2") == 0.5
    assert accuracy.width_scale(args, "rm5") == 0.25


def test_summary_and_paired_gap():
    s = accuracy_report.summary([1.0, 2.0, 3.0])
    assert (s["mean"], s["sd"], s["min"], s["max"]) == (2.0, 1.0, 1.0, 3.0)
    assert accuracy_report.summary([5.0])["sd"] == 0.0
    g = accuracy_report.paired_gap([0.9, 0.8, 0.7, np.nan],
                                   [0.8, 0.8, 0.9, 0.5])
    assert g["queries"] == 3
    assert g["mean"] == pytest.approx((0.1 + 0.0 - 0.2) / 3)
    assert (g["wins"], g["losses"]) == (pytest.approx(1 / 3),
                                        pytest.approx(1 / 3))


def test_top_k_overlap():
    a = np.array([[4.0, 3.0, 2.0, 1.0]])
    assert accuracy_report.top_k_overlap(a, a, k=2) == 1.0
    assert accuracy_report.top_k_overlap(a, -a, k=2) == 0.0
    assert accuracy_report.top_k_overlap(a, -a, k=10) == 1.0  # k clipped to N


def _scores(rng, q=20, n=12):
    relevance = rng.random((q, n)).astype(np.float32)
    labels = (rng.random((q, n)) < relevance).astype(np.float32)
    ctr = np.clip(relevance + rng.normal(0, 0.1, (q, n)), 0.01, 0.99)
    ctr = ctr.astype(np.float32)
    return labels, relevance, ctr


def test_score_metrics_compares_every_evaluation():
    labels, relevance, ctr = _scores(np.random.default_rng(3))
    int8 = ctr + np.float32(0.01)
    # int8 item tables: the two best of every query swapped.
    items8 = ctr.copy()
    best = np.argsort(-ctr, axis=1)[:, :2]
    rows = np.arange(len(ctr))[:, None]
    items8[rows, best] = ctr[rows, best[:, ::-1]]
    out = accuracy_report.score_metrics(labels, relevance, {
        "monolithic_fp32": ctr, "split_fp32": ctr + np.float32(1e-6),
        "split_int8": int8, "split_int8_items": items8, "torch_ctr": ctr})
    a = out["agreement"]
    assert a["split_fp32_vs_monolithic_max_abs"] == pytest.approx(1e-6,
                                                                   rel=0.2)
    assert a["int8_mean_abs"] == pytest.approx(0.01, rel=1e-3)
    # A constant shift changes no ranking and no AUC, but the log loss.
    assert a["int8_top10_overlap"] == 1.0
    assert a["int8_delta_auc_pct"] == pytest.approx(0.0, abs=1e-9)
    assert a["int8_delta_ndcg10"] == pytest.approx(0.0, abs=1e-9)
    assert a["int8_delta_log_loss"] != 0.0
    # A swap inside the top 10 keeps it, moves CTRs, changes the NDCG.
    assert a["int8_items_top10_overlap"] == 1.0
    assert a["int8_items_max_abs"] > 0.0
    assert a["int8_items_delta_ndcg10"] != 0.0
    e = out["evals"]["split_fp32"]
    assert len(e["ndcg_per_query"]) == 20
    assert e["ndcg10"] == pytest.approx(np.mean(e["ndcg_per_query"]))


@pytest.mark.parametrize("bad", ["split_fp32", "torch_ctr"])
def test_score_metrics_rejects_disagreeing_fp32(bad):
    labels, relevance, ctr = _scores(np.random.default_rng(4))
    scores = {"monolithic_fp32": ctr, "split_fp32": ctr, "torch_ctr": ctr}
    scores[bad] = ctr + np.float32(1e-4)
    with pytest.raises(ValueError, match=f"{bad} differs from monolithic"):
        accuracy_report.score_metrics(labels, relevance, scores)


def test_best_single_order_is_the_mean_planted_probability():
    d = data.generate(5, num_items=30, num_static=2, num_dynamic=2,
                      history_len=3, train_users=10, queries_per_user=1,
                      train_candidates=8, heldout_users=6,
                      heldout_candidates=8)
    score = accuracy_report.best_single_order(d.world, d.heldout)
    assert score.shape == (30,)
    # On each held-out query's own candidates the planted relevance averages
    # to the same score.
    h = d.heldout
    for q in range(len(h)):
        logits = d.world.click_logit(
            h.user, h.context, np.broadcast_to(h.candidates[q], (len(h), 8)))
        mean = (1 / (1 + np.exp(-logits))).mean(axis=0)
        np.testing.assert_allclose(score[h.candidates[q]], mean, rtol=1e-12)


def _cost(split):
    personalized = split == "personalized"
    return {"split_depth": 1 if personalized else 2,
            "user_vector_values": 24 if personalized else 12,
            "edge_mlp_macs_per_query": 1000 if personalized else 1300,
            "cloud_mlp_macs_per_candidate": 200 if personalized else 100,
            "user_top_mlp_int8_bytes": 964 if personalized else 1352,
            "ranking_depends_on_user": personalized}


def _run(preset, split, seed, auc, ndcg, user_units=3):
    ev = {"auc": auc, "log_loss": 0.5, "ndcg10": float(np.mean(ndcg))}
    return {
        "preset": preset, "split": split, "seed": seed, "width_scale": 0.25,
        "evals": {k: dict(ev) for k in ("monolithic_fp32", "split_fp32",
                                        "split_int8", "split_int8_items",
                                        "torch_ctr")},
        "baselines": {"planted_auc": 0.88, "planted_log_loss": 0.41,
                      "popularity_auc": 0.7,
                      "popularity_ndcg10": 0.82, "planted_ndcg10": 1.0,
                      "best_single_order_ndcg10": 0.83},
        "agreement": {"split_fp32_vs_monolithic_max_abs": 0.0,
                      "torch_ctr_vs_monolithic_max_abs": 2e-7,
                      "int8_mean_abs": 0.002, "int8_max_abs": 0.01,
                      "int8_top10_overlap": 0.99, "int8_delta_auc_pct": 0.01,
                      "int8_delta_log_loss": 1e-4, "int8_delta_ndcg10": 0.0,
                      "int8_items_mean_abs": 0.001,
                      "int8_items_max_abs": 0.005,
                      "int8_items_top10_overlap": 0.995,
                      "int8_items_delta_auc_pct": -0.01,
                      "int8_items_delta_log_loss": 1e-5},
        "seconds": {"data": 0.5, "train": 17.0, "export": 0.2,
                    "quantize": 0.1, "score": 0.2},
        "towers": {"user_units_varying": user_units, "user_units": 24,
                   "item_units_varying": 5, "item_units": 8},
        "cost": _cost(split), "ndcg_per_query": np.asarray(ndcg)}


def _runs():
    runs = []
    for seed, shift in ((1, 0.0), (2, 0.02), (3, 0.04)):
        runs.append(_run("rm2", "personalized", seed, 0.79 + shift,
                         [0.90 + shift, 0.85 + shift, 0.80 + shift]))
        runs.append(_run("rm2", "paper", seed, 0.77 + shift,
                         [0.80 + shift, 0.85 + shift, 0.82 + shift]))
    return runs


def test_aggregate_summarizes_seeds_and_pairs_the_splits():
    agg = accuracy_report.aggregate(_runs())
    models = {m["split"]: m for m in agg["models"]}
    assert models["personalized"]["seeds"] == [1, 2, 3]
    assert models["personalized"]["auc_split_fp32"]["mean"] == \
        pytest.approx(0.81)
    assert models["personalized"]["auc_split_fp32"]["sd"] == \
        pytest.approx(0.02)
    (gap,) = agg["gaps"]
    # Per query +0.10, 0, -0.02 in every seed: mean 0.08 / 3.
    assert gap["ndcg10"]["mean"] == pytest.approx(0.08 / 3)
    assert gap["ndcg10"]["sd"] == pytest.approx(0.0, abs=1e-12)
    assert gap["per_query"][0]["wins"] == pytest.approx(1 / 3)
    assert gap["auc"]["mean"] == pytest.approx(0.02)
    assert gap["upstream_bytes_ratio"] == 2.0
    assert gap["cloud_macs_ratio"] == 2.0


def test_aggregate_rejects_a_cost_that_changes_with_the_seed():
    runs = _runs()
    runs[2]["cost"] = dict(runs[2]["cost"], user_vector_values=25)
    with pytest.raises(ValueError, match="rm2 personalized: the cost"):
        accuracy_report.aggregate(runs)


def test_aggregate_without_both_splits_has_no_gap():
    runs = [r for r in _runs() if r["split"] == "paper"]
    agg = accuracy_report.aggregate(runs)
    assert agg["gaps"] == [] and len(agg["models"]) == 1


def test_tables():
    agg = accuracy_report.aggregate(_runs())
    agg["preset_costs"] = [{"preset": "rm2", "split": s, "cost": _cost(s)}
                           for s in accuracy_report.SPLITS]
    text = accuracy_report.format_tables(agg)
    assert text.startswith("Mean ± sample sd over 3 data seed(s)")
    for heading in ("### Accuracy on held-out clicks", "### Precision",
                    "### int8 item tables",
                    "### NDCG@10", "### Personalized − paper",
                    "### Cost of the split (as trained)",
                    "full width", "### Seconds per model"):
        assert heading in text, heading
    rows = [line for line in text.splitlines() if line.startswith("| rm2")]
    assert "| rm2 (×0.25) | personalized | 0.8100 ± 0.0200 |" in text
    assert "| rm2 | 0.0267 ± 0.0000 |" in text
    assert "| 1 | yes | 24 | 1,000 | 200 | 964 |" in text
    assert "17.00 ± 0.00" in text
    assert "| 0.010 ± 0.000 [+0.010, +0.010] |" in text
    # Every row of a table has as many cells as its header (an unescaped |
    # inside a cell would add one).
    for block in text.split("\n\n"):
        lines = [ln for ln in block.splitlines() if ln.startswith("|")]
        if lines:
            cells = {len(ln.replace("\\|", "").split("|")) for ln in lines}
            assert len(cells) == 1, block
    # Seven tables with a row per split, one of gaps, one of 3 seeds x 2.
    assert len(rows) == 2 * 7 + 1 + 6


def test_runs_that_did_not_learn_are_named_and_left_out_of_one_gap():
    runs = _runs()
    # Seed 2's paper model has a dead user tower.
    runs[3] = _run("rm2", "paper", 2, 0.69, [0.5, 0.5, 0.5], user_units=0)
    agg = accuracy_report.aggregate(runs)
    paper = [m for m in agg["models"] if m["split"] == "paper"][0]
    assert paper["not_learned_seeds"] == [2]
    (gap,) = agg["gaps"]
    assert gap["seeds_both_learned"] == [1, 3]
    assert gap["ndcg10_both_learned"]["values"] == \
        [pytest.approx(0.08 / 3)] * 2
    assert gap["ndcg10"]["values"][1] == pytest.approx(
        (0.92 + 0.87 + 0.82) / 3 - 0.5)
    text = accuracy_report.format_tables(agg)
    assert ("| rm2 (×0.25) | 2 | paper | 0.6900 | 0.7000 | 0.5000 | 0.8200 "
            "| 0/24 | 5/8 | no | 0 |") in text
    assert "(seeds 1, 3)" in text


def test_varying_units_and_recipe_line():
    x = np.array([[0.0, 1.0, 2.0], [0.0, 1.0, 3.0]])
    assert train.varying_units(x) == 1
    agg = accuracy_report.aggregate(_runs())
    agg["recipe"] = {"epochs": 6, "embedding_lr": 0.03}
    assert "Training: epochs 6, embedding lr 0.03." in \
        accuracy_report.format_tables(agg).splitlines()[0]
