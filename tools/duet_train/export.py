"""Writes a trained DuetModel as a model directory the C++ side loads:
edge.safetensors (static_bottom, dynamic_bottom, user_top; fp32 only),
cloud.safetensors (item_tables, item_top, combined_top), user_tables.safetensors
and, last, model.pbtxt with their checksums and the signature (so a directory
with a model.pbtxt is complete). Also the int8 calibration inputs and the
held-out evaluation set, for `duet-model quantize` and C++ accuracy checks.
"""
import os

import numpy as np

from . import pbtxt, safetensors, train

EDGE_FILE = "edge.safetensors"
CLOUD_FILE = "cloud.safetensors"
USER_TABLES_FILE = "user_tables.safetensors"
CONFIG_FILE = "model.pbtxt"
METADATA = {"format": "pt", "producer": "duet-train"}


def _array(tensor):
    return tensor.detach().cpu().numpy().astype(np.float32)


def _linears(prefix, layers):
    out = []
    for i, layer in enumerate(layers):
        out.append((f"{prefix}.{i}.weight", _array(layer.weight)))  # [out, in]
        out.append((f"{prefix}.{i}.bias", _array(layer.bias)))
    return out


def _tables(prefix, tables):
    return [(f"{prefix}.{t}.weight", _array(table.weight))
            for t, table in enumerate(tables)]


def weight_files(model):
    """[(file name, [(tensor name, array)])] in the order of model.pbtxt's
    files entries."""
    return [
        (EDGE_FILE, _linears("static_bottom", model.static_bottom) +
         _linears("dynamic_bottom", model.dynamic_bottom) +
         _linears("user_top", model.user_top)),
        (CLOUD_FILE, _tables("item_tables", model.item_tables) +
         _linears("item_top", model.item_top) +
         _linears("combined_top", model.combined_top)),
        (USER_TABLES_FILE, _tables("user_tables", model.user_tables)),
    ]


def write_model_dir(model, config, out_dir):
    """Writes the weights and model.pbtxt; returns the final config dict
    (`config` plus files and signature). `config` needs name, version,
    description, seed, rows_scale and split_depth besides the architecture."""
    os.makedirs(out_dir, exist_ok=True)
    final = dict(config, files=[])
    for name, tensors in weight_files(model):
        sha, size = safetensors.write(os.path.join(out_dir, name), tensors,
                                      METADATA)
        final["files"].append({"name": name, "sha256": sha,
                               "size_bytes": size})
    final["signature"] = pbtxt.signature(final)
    path = os.path.join(out_dir, CONFIG_FILE)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(pbtxt.format_config(final))
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)
    return final


def write_calibration(model, queries, path, samples, seed):
    """`user_top_inputs` F32 [n, user_top_in]: the user top MLP's inputs
    [z_s, z_c, p_1..p_Tu] for n training queries drawn without replacement
    (n = min(samples, queries)). Returns n."""
    rng = np.random.default_rng(seed)
    n = min(samples, len(queries))
    rows = np.sort(rng.choice(len(queries), size=n, replace=False))
    inputs = train.user_top_inputs(model, queries.take(rows))
    safetensors.write(path, [("user_top_inputs", inputs)],
                      dict(METADATA, source="training queries"))
    return n


def write_heldout(model, queries, path):
    """The held-out queries with their labels, planted relevance and the
    torch model's fp32 CTRs; returns those CTRs [Q, N]."""
    ctr = train.predict(model, queries)
    tensors = []
    if queries.static.shape[1]:
        tensors.append(("static", queries.static))
    if queries.context.shape[1]:
        tensors.append(("context", queries.context))
    tensors += [("history", queries.history.astype(np.int64)),
                ("candidates", queries.candidates.astype(np.int64)),
                ("labels", queries.labels), ("relevance", queries.relevance),
                ("torch_ctr", ctr)]
    safetensors.write(path, tensors, dict(
        METADATA, history="item ids, oldest first",
        relevance="planted click probability"))
    return ctr
