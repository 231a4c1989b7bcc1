"""The torch model and its export against a numpy oracle written from
DESIGN.md §2's math alone: it reads the exported safetensors and recomputes
catalog ids with scalar Python ints, sharing no code with model.py."""
import os

import numpy as np
import torch

from duet_train import config as cfg, data, export, safetensors
from duet_train.catalog import mix
from duet_train.model import DuetModel


def _config():
    """Covers identity MLPs (no dynamic bottom, no item top), unequal
    history lengths and two item tables."""
    return cfg.normalize({
        "name": "oracle", "version": 1, "embedding_dim": 4,
        "num_static_dense": 3, "num_dynamic_dense": 2,
        "static_bottom_layers": [5], "dynamic_bottom_layers": [],
        "user_tables": [{"name": "a", "rows": 50, "history_length": 2},
                        {"name": "b", "rows": 31, "history_length": 5}],
        "item_tables": [{"name": "i", "rows": 40, "lookups_per_item": 3},
                        {"name": "j", "rows": 17, "lookups_per_item": 1}],
        "user_top_layers": [6, 4], "item_top_layers": [],
        "combined_top_layers": [3, 1], "split_depth": 2,
        "catalog": {"seed": 77, "num_items": 60}})


def _mlp(x, tensors, prefix, count, sigmoid_last=False):
    for i in range(count):
        x = tensors[f"{prefix}.{i}.weight"].astype(np.float64) @ x + \
            tensors[f"{prefix}.{i}.bias"]
        if sigmoid_last and i == count - 1:
            x = 1.0 / (1.0 + np.exp(-x))
        else:
            x = np.maximum(x, 0.0)
    return x


def reference_ctr(out_dir, c, static, context, history, candidates):
    """CTRs of one query; `history` is a list of item ids, oldest first."""
    w = {}
    for name in ("edge", "cloud", "user_tables"):
        w.update(safetensors.read(os.path.join(out_dir,
                                               f"{name}.safetensors"))[0])
    seed_hash = mix(c["catalog"]["seed"])
    n = lambda f: len(c[f])  # noqa: E731
    parts = [_mlp(np.asarray(static, np.float64), w, "static_bottom",
                  n("static_bottom_layers")),
             _mlp(np.asarray(context, np.float64), w, "dynamic_bottom",
                  n("dynamic_bottom_layers"))]
    for t, table in enumerate(c["user_tables"]):
        p = np.zeros(c["embedding_dim"])
        for item in history[-table["history_length"]:]:
            h = mix(seed_hash ^ item)
            p += w[f"user_tables.{t}.weight"][
                mix(h ^ ((1 << 63) | (t << 32))) % table["rows"]]
        parts.append(p)
    u = _mlp(np.concatenate(parts), w, "user_top", n("user_top_layers"))
    ctr = []
    for item in candidates:
        h = mix(seed_hash ^ item)
        f = []
        for t, table in enumerate(c["item_tables"]):
            f.append(sum(w[f"item_tables.{t}.weight"][
                mix(h ^ ((t << 32) | k)) % table["rows"]]
                for k in range(table["lookups_per_item"])))
        v = _mlp(np.concatenate(f), w, "item_top", n("item_top_layers"))
        ctr.append(_mlp(np.concatenate([u, v]), w, "combined_top",
                        n("combined_top_layers"), sigmoid_last=True)[0])
    return np.array(ctr)


def test_torch_model_matches_the_oracle(tmp_path):
    c = _config()
    torch.manual_seed(5)
    model = DuetModel(c)
    out = str(tmp_path / "m")
    export.write_model_dir(model, dict(c, seed=5), out)
    rng = np.random.default_rng(0)
    # Full, short (fewer than history_length of table b) and empty histories.
    histories = [list(rng.integers(0, 60, 7)), [3, 59, 11], []]
    candidates = rng.integers(0, 60, (3, 6))
    static = rng.normal(size=(3, 3)).astype(np.float32)
    context = rng.normal(size=(3, 2)).astype(np.float32)
    padded = np.full((3, 7), -1, dtype=np.int64)
    for q, h in enumerate(histories):
        padded[q, 7 - len(h):] = h
    model.eval()
    with torch.no_grad():
        got = model(torch.from_numpy(static), torch.from_numpy(context),
                    torch.from_numpy(padded),
                    torch.from_numpy(candidates)).numpy()
    for q in range(3):
        want = reference_ctr(out, c, static[q], context[q],
                             [int(i) for i in histories[q]],
                             [int(i) for i in candidates[q]])
        np.testing.assert_allclose(got[q], want, atol=1e-5, rtol=0)
    # The CTRs are not all alike: the comparison could fail.
    assert np.ptp(got) > 1e-3


def test_heldout_file_holds_the_queries_and_torch_ctrs(tmp_path):
    c = _config()
    torch.manual_seed(5)
    model = DuetModel(c)
    out = str(tmp_path / "m")
    export.write_model_dir(model, dict(c, seed=5), out)
    d = data.generate(3, 60, 3, 2, cfg.history_length(c), train_users=4,
                      heldout_users=5, heldout_candidates=8,
                      train_candidates=4)
    path = str(tmp_path / "heldout.safetensors")
    ctr = export.write_heldout(model, d.heldout, path)
    t, _ = safetensors.read(path)
    assert sorted(t) == sorted(["static", "context", "history", "candidates",
                                "labels", "relevance", "torch_ctr"])
    assert t["history"].dtype == np.int64 and t["history"].shape == (5, 5)
    assert t["candidates"].dtype == np.int64
    assert t["candidates"].shape == (5, 8)
    np.testing.assert_array_equal(t["torch_ctr"], ctr)
    np.testing.assert_array_equal(t["relevance"], d.heldout.relevance)
    for q in range(5):
        want = reference_ctr(out, c, t["static"][q], t["context"][q],
                             [int(i) for i in t["history"][q]],
                             [int(i) for i in t["candidates"][q]])
        np.testing.assert_allclose(t["torch_ctr"][q], want, atol=1e-5)


def test_calibration_rows_are_user_top_inputs(tmp_path):
    c = _config()
    model = DuetModel(c)
    d = data.generate(3, 60, 3, 2, 5, train_users=10, train_candidates=4,
                      heldout_users=1, heldout_candidates=4)
    path = str(tmp_path / "cal.safetensors")
    assert export.write_calibration(model, d.train, path, 16, seed=1) == 16
    t, _ = safetensors.read(path)
    x = t["user_top_inputs"]
    assert x.shape == (16, cfg.dims(c)["user_top_in"]) and x.dtype == np.float32
    assert np.all(x[:, :5] >= 0)  # z_s ends in a ReLU


def test_model_without_dense_features(tmp_path):
    """rm5's shape: no static or dynamic features, a user table of one row."""
    c = cfg.normalize(dict(
        _config(), num_static_dense=0, num_dynamic_dense=0,
        static_bottom_layers=[],
        user_tables=[{"name": "id", "rows": 50, "history_length": 1},
                     {"name": "goods", "rows": 31, "history_length": 5}]))
    torch.manual_seed(6)
    model = DuetModel(c)
    out = str(tmp_path / "m")
    export.write_model_dir(model, dict(c, seed=6), out)
    edge, _ = safetensors.read(os.path.join(out, "edge.safetensors"))
    assert sorted(edge) == ["user_top.0.bias", "user_top.0.weight",
                            "user_top.1.bias", "user_top.1.weight"]
    d = data.generate(4, 60, 0, 0, 5, train_users=4, heldout_users=3,
                      heldout_candidates=6, train_candidates=4)
    path = str(tmp_path / "heldout.safetensors")
    export.write_heldout(model, d.heldout, path)
    t, _ = safetensors.read(path)
    assert "static" not in t and "context" not in t
    for q in range(3):
        want = reference_ctr(out, c, [], [], [int(i) for i in t["history"][q]],
                             [int(i) for i in t["candidates"][q]])
        np.testing.assert_allclose(t["torch_ctr"][q], want, atol=1e-5)
