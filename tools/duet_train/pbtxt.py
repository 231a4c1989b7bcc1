"""model.pbtxt: a ModelConfig dict printed in protobuf text format, the
model's signature, and a reader of the text format (`parse`).

Fields are printed in field-number order like protobuf's own printer
(duet/v1/model.proto), repeated scalars one per line. There is no
user_top_int8 block: `duet-model quantize` adds it with the int8 tensors.
"""
import codecs
import hashlib
import re

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


_TOKEN = re.compile(r'''\s+|\#[^\n]*|(?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
                        |(?P<sym>[{}:])|(?P<word>[^\s{}:"'\#]+)''', re.X)
_INT = re.compile(r"-?(?:0x[0-9a-fA-F]+|\d+)$")


def _value(kind, text):
    if kind == "str":
        return codecs.escape_decode(text[1:-1].encode("utf-8"))[0].decode(
            "utf-8")
    if _INT.match(text):
        return int(text, 0) if "x" in text else int(text)
    try:
        return float(text)
    except ValueError:
        return text  # an enum or bool name


def parse(text):
    """Protobuf text format (what format_config and the C++ TextFormat
    printer write) as {field: [value, ...]}: every field as a list in file
    order, a message field's values being dicts of the same form. Knows no
    schema (config.from_pbtxt decides which fields are repeated). Raises
    ValueError at the first token it cannot place."""
    tokens = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"model.pbtxt: cannot read {text[pos:pos + 20]!r}")
        pos = m.end()
        if m.lastgroup:
            tokens.append((m.lastgroup, m.group(m.lastgroup)))
    stack = [{}]
    i = 0
    while i < len(tokens):
        kind, tok = tokens[i]
        if kind == "sym" and tok == "}" and len(stack) > 1:
            stack.pop()
            i += 1
            continue
        if kind != "word":
            raise ValueError(f"model.pbtxt: expected a field name, got {tok!r}")
        i += 1
        if i < len(tokens) and tokens[i] == ("sym", ":"):
            i += 1
        if i >= len(tokens):
            raise ValueError(f"model.pbtxt: field {tok} has no value")
        vkind, vtok = tokens[i]
        i += 1
        if (vkind, vtok) == ("sym", "{"):
            block = {}
            stack[-1].setdefault(tok, []).append(block)
            stack.append(block)
        elif vkind == "sym":
            raise ValueError(f"model.pbtxt: field {tok}: unexpected {vtok!r}")
        else:
            stack[-1].setdefault(tok, []).append(_value(vkind, vtok))
    if len(stack) != 1:
        raise ValueError("model.pbtxt: a message block is not closed")
    return stack[0]
