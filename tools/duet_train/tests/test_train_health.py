"""The training recipe on a deep-history model (rm2's shape in miniature:
SUMs over 120-item histories and 120 lookups per item, a wide user top
input): the pooled inputs stay near their initial scale and both towers stay
alive. duet-train's old recipe (one table rate 0.03 and one MLP rate 0.01
for every layer, no clipping) grew the pooled inputs to 9-14 here and
killed a tower in 2 of these 6 runs, as it did in 4 of 10 rm2 runs
(docs/ACCURACY.md)."""
import numpy as np
import pytest
import torch

from duet_train import config as cfg, data, train
from duet_train.model import DuetModel

HISTORY = 120
ITEMS = 100
STATIC = 8


def deep_config(split):
    raw = {
        "name": "deep", "version": 1, "embeddingDim": 16,
        "numStaticDense": STATIC, "numDynamicDense": 2,
        "staticBottomLayers": [8], "dynamicBottomLayers": [],
        "userTables": [{"name": f"user_{t}", "rows": str(4 * ITEMS),
                        "historyLength": HISTORY} for t in range(4)],
        "itemTables": [{"name": "item_0", "rows": str(4 * ITEMS),
                        "lookupsPerItem": HISTORY}],
        "catalog": {"seed": "7", "numItems": str(ITEMS)}, "rowsScale": 1}
    if split == "paper":
        raw.update(userTopLayers=[12, 6], itemTopLayers=[4],
                   combinedTopLayers=[1], splitDepth=2)
    else:
        raw.update(userTopLayers=[12], itemTopLayers=[4],
                   combinedTopLayers=[8, 1], splitDepth=1)
    return cfg.normalize(raw)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("split", ["personalized", "paper"])
def test_deep_history_trains_with_live_towers(split, seed):
    torch.set_num_threads(1)
    d = data.generate(seed, ITEMS, STATIC, 2, HISTORY, train_users=300,
                      heldout_users=64, model=data.ClickModel())
    torch.manual_seed(seed)
    model = DuetModel(deep_config(split))
    lines = []
    # No restart: the recipe itself must keep the towers alive.
    train.train(model, d, train.TrainOptions(epochs=3, seed=seed,
                                             restarts=0), lines.append)
    t = train.towers(model, d.heldout)
    assert t["user_units_varying"] > 0 and t["item_units_varying"] > 0, \
        (t, lines)
    pooled = train.user_top_inputs(model, d.train.take(slice(0, 128)))
    assert np.abs(pooled[:, STATIC:]).mean() < 4.0


def test_a_dead_tower_is_restarted_and_logged():
    """Seed 3's paper split with the old rates loses its user tower in the
    first epoch; one restart from other initial weights trains it."""
    torch.set_num_threads(1)
    d = data.generate(3, ITEMS, STATIC, 2, HISTORY, train_users=300,
                      heldout_users=64, model=data.ClickModel())
    torch.manual_seed(3)
    model = DuetModel(deep_config("paper"))
    lines = []
    old = train.TrainOptions(epochs=1, seed=3, lr=0.01, embedding_lr=0.03,
                             table_lr_bag=0, grad_clip=0, restarts=1)
    stats = train.train(model, d, old, lines.append)
    assert any(line.startswith("restart 1/1: user tower dead (0/6 units "
                               "vary) after epoch 1") for line in lines), lines
    assert stats[-1].restarts == 1
