"""The model architecture as a plain dict with ModelConfig's field names.

Sources: `duet-model preset P --split S --json` (protobuf JSON of the
architecture-only ModelConfig), a file with the same JSON, or a model
directory's model.pbtxt (`load_model_dir`). `normalize`
turns either into a dict with snake_case keys and Python ints (proto3 JSON
prints 64-bit integers as strings, may use lowerCamelCase names and omits
zero or empty fields). The trainer then scales it (`scale_widths`,
`scale_rows`) and sets its own catalog; pbtxt.py prints the final dict.
"""
import json
import math
import os
import re
import shutil
import subprocess

from . import pbtxt

LAYER_FIELDS = ("static_bottom_layers", "dynamic_bottom_layers",
                "user_top_layers", "item_top_layers", "combined_top_layers")
_INT_FIELDS = ("version", "embedding_dim", "num_static_dense",
               "num_dynamic_dense", "split_depth", "seed")


def _snake(name):
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _snake_keys(value):
    if isinstance(value, dict):
        return {_snake(k): _snake_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_snake_keys(v) for v in value]
    return value


def normalize(raw):
    """Returns a complete, validated architecture dict from protobuf JSON."""
    c = _snake_keys(raw)
    out = {
        "name": str(c.get("name", "")),
        "version": int(c.get("version", 0)),
        "description": str(c.get("description", "")),
        "rows_scale": float(c.get("rows_scale", 1.0)),
    }
    for f in _INT_FIELDS:
        out[f] = int(c.get(f, 0))
    for f in LAYER_FIELDS:
        out[f] = [int(w) for w in c.get(f, [])]
    out["user_tables"] = [
        {"name": str(t.get("name", "")), "rows": int(t.get("rows", 0)),
         "history_length": int(t.get("history_length", 0))}
        for t in c.get("user_tables", [])]
    out["item_tables"] = [
        {"name": str(t.get("name", "")), "rows": int(t.get("rows", 0)),
         "lookups_per_item": int(t.get("lookups_per_item", 0))}
        for t in c.get("item_tables", [])]
    cat = c.get("catalog", {})
    out["catalog"] = {"seed": int(cat.get("seed", 0)),
                      "num_items": int(cat.get("num_items", 0))}
    if "split_depth" not in c:
        # An architecture printed before split_depth existed: the user tower
        # is every top layer that is not combined.
        out["split_depth"] = len(out["user_top_layers"])
    validate(out)
    return out


def validate(c):
    """Raises ValueError naming what is wrong (the C++ ValidateConfig rules
    that the trainer relies on)."""
    if not c["name"]:
        raise ValueError("name is empty")
    if c["embedding_dim"] <= 0:
        raise ValueError(f"embedding_dim is {c['embedding_dim']}, must be > 0")
    for f in LAYER_FIELDS:
        if any(w <= 0 for w in c[f]):
            raise ValueError(f"{f} is {c[f]}, layer widths must be positive")
    for dense, bottom in (("num_static_dense", "static_bottom_layers"),
                          ("num_dynamic_dense", "dynamic_bottom_layers")):
        if c[dense] < 0:
            raise ValueError(f"{dense} is {c[dense]}, must be >= 0")
        if c[dense] == 0 and c[bottom]:
            raise ValueError(f"{bottom} given but {dense} is 0")
    if not c["user_top_layers"]:
        raise ValueError("user_top_layers is empty")
    if not c["combined_top_layers"] or c["combined_top_layers"][-1] != 1:
        raise ValueError("combined_top_layers must end with a layer of "
                         f"width 1 (the CTR), got {c['combined_top_layers']}")
    if not c["user_tables"] or not c["item_tables"]:
        raise ValueError("user_tables and item_tables must both be non-empty")
    for i, t in enumerate(c["user_tables"]):
        if t["rows"] <= 0 or t["history_length"] <= 0:
            raise ValueError(f"user_tables[{i}] ({t['name']}): rows "
                             f"{t['rows']} and history_length "
                             f"{t['history_length']} must be positive")
    for i, t in enumerate(c["item_tables"]):
        if t["rows"] <= 0 or t["lookups_per_item"] <= 0:
            raise ValueError(f"item_tables[{i}] ({t['name']}): rows "
                             f"{t['rows']} and lookups_per_item "
                             f"{t['lookups_per_item']} must be positive")


def _round(x):
    """Half away from zero, like C++ llround (Python's round is to even)."""
    return int(math.floor(x + 0.5))


def scale_widths(c, factor):
    """A copy with every layer width and dense count times `factor`
    (rounded, at least 1; zero dense counts stay 0; the CTR layer stays 1)."""
    if not factor > 0:
        raise ValueError(f"width scale must be positive, got {factor}")
    out = json.loads(json.dumps(c))
    scale = lambda w: max(1, _round(w * factor))  # noqa: E731
    for f in LAYER_FIELDS:
        out[f] = [scale(w) for w in c[f]]
    out["combined_top_layers"][-1] = 1
    for f in ("num_static_dense", "num_dynamic_dense"):
        out[f] = scale(c[f]) if c[f] > 0 else 0
    return out


def max_rows(c):
    return max(t["rows"] for t in c["user_tables"] + c["item_tables"])


def auto_rows_scale(c, num_items, rows_per_item=4):
    """The largest scale <= 1 at which no table has more than
    `rows_per_item` rows per catalog item: a synthetic catalog of a few
    thousand items touches only so many rows, the rest would be dead
    weight in memory and in every optimizer step."""
    return min(1.0, rows_per_item * num_items / max_rows(c))


def scale_rows(c, factor):
    """A copy with every table's rows times `factor` (rounded like C++
    PresetConfig, at least 1) and rows_scale multiplied by it."""
    if not 0 < factor <= 1:
        raise ValueError(f"rows scale must be in (0, 1], got {factor}")
    out = json.loads(json.dumps(c))
    for t in out["user_tables"] + out["item_tables"]:
        t["rows"] = max(1, _round(t["rows"] * factor))
    out["rows_scale"] = c["rows_scale"] * factor
    return out


def dims(c):
    """Input and output widths of every MLP (C++ ComputeDims)."""
    d = {}
    last = lambda width_in, layers: layers[-1] if layers else width_in  # noqa
    d["static_in"] = c["num_static_dense"]
    d["static_out"] = last(d["static_in"], c["static_bottom_layers"])
    d["dynamic_in"] = c["num_dynamic_dense"]
    d["dynamic_out"] = last(d["dynamic_in"], c["dynamic_bottom_layers"])
    d["pooled"] = len(c["user_tables"]) * c["embedding_dim"]
    d["user_top_in"] = d["static_out"] + d["dynamic_out"] + d["pooled"]
    d["user_out"] = last(d["user_top_in"], c["user_top_layers"])
    d["item_top_in"] = len(c["item_tables"]) * c["embedding_dim"]
    d["item_out"] = last(d["item_top_in"], c["item_top_layers"])
    d["combined_in"] = d["user_out"] + d["item_out"]
    return d


def history_length(c):
    """Items of history the longest user table pools."""
    return max(t["history_length"] for t in c["user_tables"])


def find_duet_model(explicit=None):
    """Path of the duet-model binary: `explicit`, else $DUET_MODEL, else
    duet-model on PATH; None when none is executable. (No guess at a build
    directory: a stale build there reads configs of an older model.proto.)"""
    if explicit is not None:
        if not os.access(explicit, os.X_OK):
            raise ValueError(f"--duet-model {explicit} is not an executable "
                             "file")
        return explicit
    for path in (os.environ.get("DUET_MODEL"), shutil.which("duet-model")):
        if path and os.access(path, os.X_OK):
            return path
    return None


def preset_config(duet_model, preset, split):
    """Runs `duet-model preset P --split S --json` and normalizes its output.
    Raises RuntimeError with the tool's stderr when it fails."""
    cmd = [duet_model, "preset", preset, "--split", split, "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: "
                           f"{proc.stderr.strip()}")
    return normalize(json.loads(proc.stdout))


def load_config(path):
    with open(path, encoding="utf-8") as f:
        return normalize(json.load(f))


# ModelConfig's repeated fields; every other field of model.pbtxt is
# singular (the last value wins, as in protobuf).
_REPEATED = LAYER_FIELDS + ("user_tables", "item_tables", "files")


def _singular(fields):
    return {k: ([_singular(x) if isinstance(x, dict) else x for x in v]
                if k in _REPEATED else
                (_singular(v[-1]) if isinstance(v[-1], dict) else v[-1]))
            for k, v in fields.items()}


def from_pbtxt(text):
    """The normalized architecture dict of model.pbtxt's text."""
    return normalize(_singular(pbtxt.parse(text)))


def load_model_dir(model_dir):
    """The architecture of a model directory (its model.pbtxt)."""
    with open(os.path.join(model_dir, "model.pbtxt"), encoding="utf-8") as f:
        return from_pbtxt(f.read())
