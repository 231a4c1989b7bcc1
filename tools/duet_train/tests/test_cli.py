"""tools/duet-train end to end: usage errors, a small run from a config file,
and (when DUET_MODEL names a built duet-model) verify and quantize of the
directory it writes."""
import json
import os
import subprocess

import numpy as np
import pytest

from duet_train import config as cfg, safetensors
from conftest import TOOLS, tiny_config

WRAPPER = os.path.join(TOOLS, "duet-train")


def _run(*args):
    return subprocess.run([WRAPPER, *args], capture_output=True, text=True,
                          check=False, timeout=120)


def test_help_exits_0():
    proc = _run("--help")
    assert proc.returncode == 0
    assert "usage: duet-train" in proc.stdout and "--width-scale" in proc.stdout


@pytest.mark.parametrize("args, message", [
    ([], "required"),
    (["--preset", "tiny"], "--out"),
    (["--preset", "tiny", "--out", "x", "--epochs", "0"], "must be positive"),
    (["--preset", "tiny", "--out", "x", "--rows-scale", "2"], "(0, 1]"),
    (["--preset", "tiny", "--out", "x", "--split", "deep"], "invalid choice"),
    (["--config", "c.json", "--split", "paper", "--out", "x"],
     "--split applies to --preset"),
])
def test_bad_usage_exits_2(args, message):
    proc = _run(*args)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_missing_config_file_exits_1(tmp_path):
    proc = _run("--config", str(tmp_path / "none.json"), "--out",
                str(tmp_path / "m"))
    assert proc.returncode == 1
    assert "none.json" in proc.stderr


def _config_file(tmp_path):
    raw = dict(tiny_config())
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(raw))
    return str(path)


def test_small_run_writes_the_model_directory(tmp_path):
    out = tmp_path / "model"
    proc = _run("--config", _config_file(tmp_path), "--out", str(out),
                "--users", "100", "--epochs", "2", "--heldout-users", "8",
                "--candidates", "20", "--calibration-samples", "32",
                "--width-scale", "0.5", "--version", "3", "--seed", "7")
    assert proc.returncode == 0, proc.stderr
    assert "epoch 2: loss" in proc.stderr
    for word in ("data:", "train:", "held-out:", "export:", str(out)):
        assert word in proc.stdout
    assert sorted(os.listdir(out)) == sorted([
        "model.pbtxt", "edge.safetensors", "cloud.safetensors",
        "user_tables.safetensors", "calibration.safetensors",
        "heldout.safetensors"])
    text = (out / "model.pbtxt").read_text()
    for line in ('name: "tiny-trained"', "version: 3", "seed: 7",
                 "num_static_dense: 7", "user_top_layers: 12",
                 "combined_top_layers: 8", "  num_items: 200"):
        assert line in text.splitlines(), line
    assert "seed 7, 2 epochs" in text
    user_top_in = cfg.dims(cfg.scale_widths(tiny_config(), 0.5))["user_top_in"]
    cal, _ = safetensors.read(str(out / "calibration.safetensors"))
    assert cal["user_top_inputs"].shape == (32, user_top_in)
    held, _ = safetensors.read(str(out / "heldout.safetensors"))
    assert held["static"].shape == (8, 7) and held["context"].shape == (8, 1)
    assert held["history"].shape == (8, 6)  # longest history_length
    assert held["candidates"].shape == (8, 20)
    assert np.all((held["torch_ctr"] > 0) & (held["torch_ctr"] < 1))


def test_duet_model_verifies_scores_and_quantizes_it(tmp_path, duet_model):
    """The C++ side loads the directory unchanged: verify accepts it, its
    monolithic and split fp32 CTRs of the held-out queries equal torch's,
    and quantize adds an int8 user top MLP that verify accepts too."""
    tool = duet_model
    out = str(tmp_path / "model")
    proc = _run("--config", _config_file(tmp_path), "--out", out, "--users",
                "100", "--epochs", "1", "--heldout-users", "8")
    assert proc.returncode == 0, proc.stderr
    _check(tool, "verify", out)
    held = os.path.join(out, "heldout.safetensors")
    scores = str(tmp_path / "scores.safetensors")
    _check(tool, "score", out, "--queries", held, "--out", scores)
    got, _ = safetensors.read(scores)
    want = safetensors.read(held)[0]["torch_ctr"]
    for name in ("monolithic_fp32", "split_fp32"):
        np.testing.assert_allclose(got[name], want, atol=1e-5, rtol=0)
    _check(tool, "quantize", out, "--calibration",
           os.path.join(out, "calibration.safetensors"))
    assert "user_top_int8 {" in open(os.path.join(out, "model.pbtxt")).read()
    int8 = {}
    for name in ("edge.safetensors", "edge_int8.safetensors"):
        if os.path.exists(os.path.join(out, name)):
            int8.update(safetensors.read(os.path.join(out, name))[0])
    assert int8["user_top_int8.0.weight"].dtype == np.int8
    _check(tool, "verify", out)


def _check(tool, *args):
    proc = subprocess.run([tool, *args], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, f"duet-model {args[0]}: {proc.stderr}"
