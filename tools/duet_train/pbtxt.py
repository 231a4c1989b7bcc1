"""model.pbtxt: a ModelConfig dict printed in protobuf text format, and the
model's signature.

Fields are printed in field-number order like protobuf's own printer
(duet/v1/model.proto), repeated scalars one per line. There is no
user_top_int8 block: `duet-model quantize` adds it with the int8 tensors.
"""
import hashlib

HEADER = ("# proto-file: duet/v1/model.proto\n"
          "# proto-message: duet.v1.ModelConfig\n")


def signature(config):
    """First 16 lowercase hex digits of SHA-256 over
    "duet.v1.ModelConfig/2:<name>:<version>:split=<split_depth>"
    ":catalog=<seed>/<num_items>", then ":u=<rows>/<history_length>" per user
    table, ":i=<rows>/<lookups_per_item>" per item table and
    ":<file name>=<sha256>" per files entry, in order (integers in decimal)."""
    cat = config["catalog"]
    text = (f"duet.v1.ModelConfig/2:{config['name']}:{int(config['version'])}"
            f":split={int(config['split_depth'])}"
            f":catalog={int(cat['seed'])}/{int(cat['num_items'])}")
    for t in config["user_tables"]:
        text += f":u={int(t['rows'])}/{int(t['history_length'])}"
    for t in config["item_tables"]:
        text += f":i={int(t['rows'])}/{int(t['lookups_per_item'])}"
    for f in config["files"]:
        text += f":{f['name']}={f['sha256']}"
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:16]


def _string(s):
    escaped = (s.replace("\\", "\\\\").replace('"', '\\"')
               .replace("\n", "\\n").replace("\r", "\\r")
               .replace("\t", "\\t"))
    return f'"{escaped}"'


def _double(x):
    # repr is the shortest text that parses back to the same double.
    return repr(float(x))


def _block(name, fields, indent="  "):
    lines = [f"{name} {{"]
    lines += [f"{indent}{key}: {value}" for key, value in fields]
    return lines + ["}"]


def format_config(config):
    """The text of model.pbtxt for a complete config dict (config.py keys plus
    files, seed and signature)."""
    c = config
    lines = [f"name: {_string(c['name'])}",
             f"version: {int(c['version'])}",
             f"description: {_string(c['description'])}",
             f"embedding_dim: {int(c['embedding_dim'])}",
             f"num_static_dense: {int(c['num_static_dense'])}",
             f"num_dynamic_dense: {int(c['num_dynamic_dense'])}"]
    widths = lambda field: [f"{field}: {int(w)}" for w in c[field]]  # noqa
    lines += widths("static_bottom_layers") + widths("dynamic_bottom_layers")
    for t in c["user_tables"]:
        lines += _block("user_tables", [
            ("name", _string(t["name"])), ("rows", int(t["rows"])),
            ("history_length", int(t["history_length"]))])
    for t in c["item_tables"]:
        lines += _block("item_tables", [
            ("name", _string(t["name"])), ("rows", int(t["rows"])),
            ("lookups_per_item", int(t["lookups_per_item"]))])
    lines += (widths("user_top_layers") + widths("item_top_layers") +
              widths("combined_top_layers"))
    lines += _block("catalog", [("seed", int(c["catalog"]["seed"])),
                                ("num_items", int(c["catalog"]["num_items"]))])
    for f in c["files"]:
        lines += _block("files", [("name", _string(f["name"])),
                                  ("sha256", _string(f["sha256"])),
                                  ("size_bytes", int(f["size_bytes"]))])
    lines += [f"seed: {int(c['seed'])}",
              f"rows_scale: {_double(c['rows_scale'])}",
              f"signature: {_string(c['signature'])}",
              f"split_depth: {int(c['split_depth'])}"]
    return HEADER + "\n".join(lines) + "\n"
