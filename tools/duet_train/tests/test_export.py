"""safetensors round trip and layout, the signature, and the model directory
written by export.py (checked against duet-model verify when it is built)."""
import hashlib
import json
import os
import struct
import subprocess

import numpy as np
import pytest
import torch

from duet_train import config as cfg, export, pbtxt, safetensors
from duet_train.model import DuetModel


def test_safetensors_round_trip_and_alignment(tmp_path):
    tensors = [("w", np.arange(6, dtype=np.float32).reshape(2, 3)),
               ("ids", np.array([[1, -2], [3, 2**40]], dtype=np.int64)),
               ("q", np.array([-128, 0, 127], dtype=np.int8)),
               ("s", np.float32(2.5).reshape(()))]
    path = str(tmp_path / "t.safetensors")
    sha, size = safetensors.write(path, tensors, {"k": "v"})
    raw = open(path, "rb").read()
    assert size == len(raw) and sha == hashlib.sha256(raw).hexdigest()
    (n,) = struct.unpack("<Q", raw[:8])
    assert (8 + n) % 64 == 0
    header = json.loads(raw[8:8 + n])  # trailing spaces are JSON whitespace
    assert raw[8:8 + n].rstrip(b" ").endswith(b"}")
    assert header["__metadata__"] == {"k": "v"}
    assert header["w"] == {"dtype": "F32", "shape": [2, 3],
                           "data_offsets": [0, 24]}
    assert header["ids"]["data_offsets"] == [24, 56]
    assert header["q"] == {"dtype": "I8", "shape": [3],
                           "data_offsets": [56, 59]}
    assert header["s"]["shape"] == [] and header["s"]["data_offsets"] == [59,
                                                                          63]
    assert len(raw) == 8 + n + 63
    # Little-endian bytes of the first tensor, straight after the header.
    assert raw[8 + n:8 + n + 8] == struct.pack("<2f", 0.0, 1.0)
    back, meta = safetensors.read(path)
    assert meta == {"k": "v"}
    for name, array in tensors:
        assert back[name].dtype == array.dtype
        np.testing.assert_array_equal(back[name], array)


def test_safetensors_decode_rejects_a_gap():
    data = bytearray(safetensors.encode([("a", np.zeros(2, np.float32)),
                                         ("b", np.zeros(2, np.float32))]))
    data = data.replace(b'"data_offsets":[8,16]', b'"data_offsets":[9,17]')
    with pytest.raises(ValueError, match="tensor b: data_offsets"):
        safetensors.decode(bytes(data))


def test_signature_of_a_fixed_example():
    config = {
        "name": "rm2-trained", "version": 3, "split_depth": 1,
        "catalog": {"seed": 42, "num_items": 1000},
        "user_tables": [{"rows": 500, "history_length": 120},
                        {"rows": 250, "history_length": 7}],
        "item_tables": [{"rows": 4000, "lookups_per_item": 120}],
        "files": [{"name": "edge.safetensors", "sha256": "aaaa"},
                  {"name": "cloud.safetensors", "sha256": "bbbb"},
                  {"name": "user_tables.safetensors", "sha256": "cccc"}],
    }
    # printf '%s' 'duet.v1.ModelConfig/2:rm2-trained:3:split=1:catalog=42/1000
    # :u=500/120:u=250/7:i=4000/120:edge.safetensors=aaaa:cloud.safetensors=
    # bbbb:user_tables.safetensors=cccc' | sha256sum   (one line, no breaks)
    assert pbtxt.signature(config) == "043e08648ea3b3d8"
    config["split_depth"] = 2
    assert pbtxt.signature(config) != "043e08648ea3b3d8"


def _export(tmp_path, config):
    torch.manual_seed(3)
    model = DuetModel(config)
    config = dict(config, name="tiny-trained", version=7, seed=9,
                  description='says "how"\nand more')
    out = str(tmp_path / "model")
    return model, export.write_model_dir(model, config, out), out


def test_model_dir_files_and_tensors(tmp_path, tiny):
    model, final, out = _export(tmp_path, tiny)
    assert [f["name"] for f in final["files"]] == [
        "edge.safetensors", "cloud.safetensors", "user_tables.safetensors"]
    for f in final["files"]:
        raw = open(os.path.join(out, f["name"]), "rb").read()
        assert f["sha256"] == hashlib.sha256(raw).hexdigest()
        assert f["size_bytes"] == len(raw)
    d = cfg.dims(tiny)
    edge, _ = safetensors.read(os.path.join(out, "edge.safetensors"))
    assert {k: v.shape for k, v in edge.items()} == {
        "static_bottom.0.weight": (12, 14), "static_bottom.0.bias": (12,),
        "static_bottom.1.weight": (7, 12), "static_bottom.1.bias": (7,),
        "dynamic_bottom.0.weight": (2, 2), "dynamic_bottom.0.bias": (2,),
        "dynamic_bottom.1.weight": (1, 2), "dynamic_bottom.1.bias": (1,),
        "user_top.0.weight": (24, d["user_top_in"]),
        "user_top.0.bias": (24,)}
    np.testing.assert_array_equal(edge["user_top.0.weight"],
                                  model.user_top[0].weight.detach().numpy())
    cloud, _ = safetensors.read(os.path.join(out, "cloud.safetensors"))
    assert {k: v.shape for k, v in cloud.items()} == {
        "item_tables.0.weight": (1000, 8),
        "item_top.0.weight": (8, 8), "item_top.0.bias": (8,),
        "combined_top.0.weight": (16, 32), "combined_top.0.bias": (16,),
        "combined_top.1.weight": (1, 16), "combined_top.1.bias": (1,)}
    users, _ = safetensors.read(os.path.join(out, "user_tables.safetensors"))
    assert sorted(users) == [f"user_tables.{t}.weight" for t in range(3)]
    assert all(v.shape == (1000, 8) and v.dtype == np.float32
               for v in users.values())


def test_model_pbtxt_fields(tmp_path, tiny):
    _, final, out = _export(tmp_path, tiny)
    text = open(os.path.join(out, "model.pbtxt")).read()
    lines = text.splitlines()
    assert lines[:2] == ["# proto-file: duet/v1/model.proto",
                         "# proto-message: duet.v1.ModelConfig"]
    for line in ['name: "tiny-trained"', "version: 7",
                 r'description: "says \"how\"\nand more"',
                 "embedding_dim: 8", "num_static_dense: 14",
                 "num_dynamic_dense: 2", "split_depth: 1", "seed: 9",
                 "rows_scale: 1.0", f'signature: "{final["signature"]}"',
                 "  history_length: 6", "  lookups_per_item: 3",
                 "  seed: 12345", "  num_items: 500"]:
        assert line in lines, line
    for field, widths in (("static_bottom_layers", [12, 7]),
                          ("user_top_layers", [24]),
                          ("combined_top_layers", [16, 1])):
        assert [int(l.split(": ")[1]) for l in lines
                if l.startswith(field + ":")] == widths
    names = [l for l in lines if l.startswith('  name: "') and "safetensors"
             in l]
    assert names == ['  name: "edge.safetensors"', '  name: "cloud.safetensors"',
                     '  name: "user_tables.safetensors"']
    assert "user_top_int8" not in text
    assert final["signature"] == pbtxt.signature(final)
    assert len(final["signature"]) == 16



def test_load_model_dir_reads_what_export_writes(tmp_path, tiny):
    _, final, out = _export(tmp_path, tiny)
    back = cfg.load_model_dir(out)
    assert back == cfg.normalize(final)
    assert back["description"] == 'says "how"\nand more'
    # An int8 block (duet-model quantize) and comments are read past.
    text = open(os.path.join(out, "model.pbtxt")).read()
    text += 'user_top_int8 {\n  calibration_samples: 512\n}  # done\n'
    assert cfg.from_pbtxt(text) == back
    with pytest.raises(ValueError, match="not closed"):
        cfg.from_pbtxt(text + "catalog {\n")


def test_load_model_dir_reads_duet_model_gen(tmp_path, duet_model):
    out = str(tmp_path / "rm5")
    subprocess.run([duet_model, "gen", "--preset", "rm5", "--rows-scale",
                    "0.001", "--out", out], check=True,
                   stdout=subprocess.DEVNULL)
    c = cfg.load_model_dir(out)
    preset = cfg.preset_config(duet_model, "rm5", "personalized")
    for key in ("embedding_dim", "split_depth", "user_top_layers",
                "combined_top_layers"):
        assert c[key] == preset[key], key
    assert [t["history_length"] for t in c["user_tables"]] == [1, 199, 199]
    assert c["catalog"]["num_items"] == 1000000 and c["rows_scale"] == 0.001


def test_duet_model_verify_accepts_the_directory(tmp_path, tiny, duet_model):
    tool = duet_model
    _, _, out = _export(tmp_path, tiny)
    proc = subprocess.run([tool, "verify", out], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr
