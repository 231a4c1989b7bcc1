"""The decomposed Duet DLRM in torch: exactly DESIGN.md §2's math.

  z_s = StaticBottom(s), z_c = DynamicBottom(c)        (identity if no layers)
  p_t = SUM of user table t at HistoryKey(item, t) over the last
        history_length[t] history items (fewer if the history is shorter)
  u   = UserTop([z_s, z_c, p_1..p_Tu])
  f_jt = SUM of item table t at the catalog's lookups_per_item(t) ids of j
  v_j = ItemTop([f_j1..f_jTi])                         (identity if no layers)
  ctr = sigmoid(CombinedTop([u, v_j]))
Every Linear is followed by ReLU except the last combined layer (sigmoid).
Parameter names are those of the exported tensors: static_bottom.{i}.weight,
user_tables.{t}.weight, ... (C++ oracle: common/model/reference_model.cc).
"""
import numpy as np
import torch
from torch import nn

from . import config as cfg
from .catalog import Catalog


def _linears(width_in, widths):
    layers = []
    for w in widths:
        layers.append(nn.Linear(width_in, w))
        width_in = w
    return nn.ModuleList(layers)


def _run(layers, x, relu_last=True):
    for i, layer in enumerate(layers):
        x = layer(x)
        if relu_last or i + 1 < len(layers):
            x = torch.relu(x)
    return x


def _tables(specs, dim, bags):
    """SUM EmbeddingBags initialized N(0, 1/(dim * bag)), so that a pooled
    vector starts with norm about 1 whatever the bag size (kept as `.bag`,
    which the trainer's per-table learning rate reads too). Dense gradients:
    with a bag of 120 lookups per item, coalescing sparse gradients for
    SparseAdam cost twice the whole step (measured on rm2 at rows 4000)."""
    tables = nn.ModuleList()
    for spec, bag in zip(specs, bags):
        t = nn.EmbeddingBag(spec["rows"], dim, mode="sum")
        t.bag = bag
        _init_table(t)
        tables.append(t)
    return tables


def _init_table(table):
    std = (table.embedding_dim * table.bag) ** -0.5
    nn.init.normal_(table.weight, 0.0, std)


class DuetModel(nn.Module):
    """The whole model; `user_top_inputs`, `user_vector`, `item_vector` and
    `logits` expose the split so tests and the exporter can use each part.
    History arrays are [B, H] item ids oldest first; -1 marks an absent item
    (left padding of a short history)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        d = cfg.dims(config)
        self.dims = d
        dim = config["embedding_dim"]
        self.static_bottom = _linears(d["static_in"],
                                      config["static_bottom_layers"])
        self.dynamic_bottom = _linears(d["dynamic_in"],
                                       config["dynamic_bottom_layers"])
        self.user_top = _linears(d["user_top_in"], config["user_top_layers"])
        self.item_top = _linears(d["item_top_in"], config["item_top_layers"])
        self.combined_top = _linears(d["combined_in"],
                                     config["combined_top_layers"])
        self.user_tables = _tables(
            config["user_tables"], dim,
            [t["history_length"] for t in config["user_tables"]])
        self.item_tables = _tables(
            config["item_tables"], dim,
            [t["lookups_per_item"] for t in config["item_tables"]])

        # The catalog precomputed for every item: not weights, not exported.
        catalog = Catalog(config)
        items = np.arange(catalog.num_items)
        keys = np.stack([catalog.history_keys(items, t)
                         for t in range(len(config["user_tables"]))], axis=1)
        self.register_buffer("history_keys", torch.from_numpy(keys),
                             persistent=False)
        for t in range(len(config["item_tables"])):
            self.register_buffer(f"sparse_ids_{t}", torch.from_numpy(
                catalog.sparse_ids(items, t)), persistent=False)

    def reset_parameters(self):
        """Draws every weight again from torch's generator, with the
        constructor's initialization (the trainer's restart of a dead
        tower)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                m.reset_parameters()
        for t in list(self.user_tables) + list(self.item_tables):
            _init_table(t)

    def pooled_history(self, history):
        """[B, Tu * d]: p_1..p_Tu for item-id histories [B, H]."""
        present = history >= 0
        ids = history.clamp(min=0)
        pooled = []
        for t, table in enumerate(self.user_tables):
            length = self.config["user_tables"][t]["history_length"]
            keys = self.history_keys[ids[:, -length:], t]
            mask = present[:, -length:]
            if bool(mask.all()):
                pooled.append(table(keys))
            else:
                pooled.append(table(keys, per_sample_weights=mask.float()))
        return torch.cat(pooled, dim=1)

    def user_top_inputs(self, static, context, history):
        """[B, user_top_in]: x = [z_s, z_c, p_1..p_Tu]."""
        z_s = _run(self.static_bottom, static)
        z_c = _run(self.dynamic_bottom, context)
        return torch.cat([z_s, z_c, self.pooled_history(history)], dim=1)

    def user_vector(self, static, context, history):
        return _run(self.user_top,
                    self.user_top_inputs(static, context, history))

    def item_vector(self, items):
        """[n, item_out] for item ids [n]."""
        f = torch.cat([table(getattr(self, f"sparse_ids_{t}")[items])
                       for t, table in enumerate(self.item_tables)], dim=1)
        return _run(self.item_top, f)

    def logits(self, static, context, history, candidates):
        """[B, K] combined-top outputs before the sigmoid."""
        u = self.user_vector(static, context, history)
        # Item vectors once per distinct candidate of the batch.
        unique, inverse = torch.unique(candidates, return_inverse=True)
        v = self.item_vector(unique)[inverse]  # [B, K, item_out]
        u = u[:, None, :].expand(-1, candidates.shape[1], -1)
        x = torch.cat([u, v], dim=2)
        return _run(self.combined_top, x, relu_last=False).squeeze(-1)

    def forward(self, static, context, history, candidates):
        """CTRs [B, K]."""
        return torch.sigmoid(self.logits(static, context, history,
                                         candidates))
