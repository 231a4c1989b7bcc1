"""bench/torch_peer against the C++ references: its monolithic and split
CTRs equal `duet-model score`'s (monolithic_fp32, split_fp32) within 1e-5 on
small generated models, in every execution mode; and the check does fail
when the peer concatenates the combined top MLP's input in the wrong order.
Needs Debian's torch (/usr/bin/python3) and DUET_MODEL (ctest passes it)."""
import importlib.machinery
import importlib.util
import os
import subprocess

import pytest

torch = pytest.importorskip("torch")

HERE = os.path.dirname(os.path.abspath(__file__))
_loader = importlib.machinery.SourceFileLoader(
    "torch_peer", os.path.join(HERE, "torch_peer"))
_spec = importlib.util.spec_from_loader("torch_peer", _loader)
peer_mod = importlib.util.module_from_spec(_spec)
_loader.exec_module(peer_mod)


@pytest.fixture(scope="module")
def duet_model():
    tool = peer_mod.cfg.find_duet_model()
    if tool is None:
        pytest.skip("duet-model not built (set DUET_MODEL to its path)")
    return tool


@pytest.fixture(scope="module")
def models(tmp_path_factory, duet_model):
    """tiny at full size, rm2 and rm5 with small tables."""
    out = {}
    for preset, scale in (("tiny", "1"), ("rm2", "0.001"), ("rm5", "0.001")):
        d = str(tmp_path_factory.mktemp("models") / preset)
        subprocess.run([duet_model, "gen", "--preset", preset,
                        "--rows-scale", scale, "--seed", "5", "--out", d],
                       check=True, stdout=subprocess.DEVNULL)
        out[preset] = d
    return out


def peer(model_dir, exec_mode, candidates=64, history=None):
    peer_mod.setup_threads(1)
    return peer_mod.Peer(model_dir, lambda c: peer_mod.Queries(
        c, 3, candidates, 1.05, 11, history), exec_mode)


@pytest.mark.parametrize("preset", ["tiny", "rm2", "rm5"])
@pytest.mark.parametrize("exec_mode", peer_mod.EXECS)
def test_ctrs_match_duet_model_score(models, duet_model, preset, exec_mode):
    p = peer(models[preset], exec_mode)
    r = peer_mod.check(p, duet_model, models[preset])
    assert r["monolithic_max_abs_diff"] <= peer_mod.TOLERANCE, r
    assert r["split_max_abs_diff"] <= peer_mod.TOLERANCE, r


def test_history_shorter_than_a_tables_length(models, duet_model):
    # tiny's user tables pool the last 4, 5 and 6 items: with 5, the third
    # pools all 5 (the C++ pools min(history_length, H) items).
    p = peer(models["tiny"], "script", history=5)
    r = peer_mod.check(p, duet_model, models["tiny"])
    assert max(r["monolithic_max_abs_diff"],
               r["split_max_abs_diff"]) <= peer_mod.TOLERANCE, r


class _Swapped(torch.nn.Module):
    """The combined top MLP fed [v_j, u] instead of [u, v_j]."""

    def __init__(self, inner, user_out):
        super().__init__()
        self.inner, self.user_out = inner, user_out

    def forward(self, x):
        return self.inner(torch.cat([x[:, self.user_out:],
                                     x[:, :self.user_out]], 1))


def test_check_catches_a_wrong_concatenation_order(models, duet_model):
    p = peer(models["rm2"], "eager")
    user_out = peer_mod.cfg.dims(p.config)["user_out"]
    for m in p.eval.values():
        m.combined_top = _Swapped(m.combined_top, user_out)
    r = peer_mod.check(p, duet_model, models["rm2"])
    assert r["monolithic_max_abs_diff"] > 100 * peer_mod.TOLERANCE, r
    assert r["split_max_abs_diff"] > 100 * peer_mod.TOLERANCE, r


def test_time_reports_latency_per_mode(models):
    p = peer(models["tiny"], "script")
    r = p.time("split", 8, 0.05, 0.01)
    assert r["n"] == 8 and r["mode"] == "split" and r["queries"] >= 5
    assert 0 < r["lat_p50_ms"] <= r["lat_p99_ms"] and r["qps"] > 0
