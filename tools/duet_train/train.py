"""Training loop and batched inference of DuetModel on a Queries log.

One optimizer step covers `batch_size` queries and all their candidates
(binary cross-entropy on the clicks), Adam with one learning rate for the
MLPs and one per table, the gradient's norm clipped. Deterministic for a
given seed with one thread (the shuffling draws from a numpy generator
seeded by it).

Why per table: Adam moves every row of a table by about its learning rate
per step whatever the row's gradient, and the rows of one bag (a history,
an item's lookups) move together, so a SUM over a bag of B rows moves B
times as far. With one rate 0.03 for all tables, rm2's 120-item bags grew
the user top's inputs from about 1 to 7-14 and killed a tower in 4 of 10
runs (docs/ACCURACY.md); a table's rate is therefore embedding_lr scaled
by min(1, table_lr_bag / B), which leaves bags up to table_lr_bag (tiny's
3-6) as they were.
"""
import dataclasses
import time

import numpy as np
import torch
from torch import nn

from . import metrics


@dataclasses.dataclass
class TrainOptions:
    epochs: int = 4
    batch_size: int = 64       # queries per step
    lr: float = 3e-3           # MLPs
    embedding_lr: float = 3e-2  # tables with bags up to table_lr_bag
    table_lr_bag: int = 8      # 0: every table at embedding_lr
    grad_clip: float = 1.0     # max L2 norm of the whole gradient; 0: off
    restarts: int = 2          # dead-tower restarts allowed
    seed: int = 1
    eval_queries: int = 512    # training queries scored for the train AUC


@dataclasses.dataclass
class EpochStats:
    epoch: int
    loss: float          # mean training loss over the epoch's steps
    train_auc: float
    heldout_auc: float
    seconds: float
    restarts: int = 0    # dead-tower restarts before this run's start


def as_tensors(queries):
    """The model inputs of `queries` as torch tensors (no copy for numpy
    arrays of the right dtype)."""
    return (torch.from_numpy(queries.static), torch.from_numpy(queries.context),
            torch.from_numpy(queries.history),
            torch.from_numpy(queries.candidates))


def predict(model, queries, batch_size=256):
    """CTRs [Q, K] (float32 numpy) of the model in eval mode."""
    model.eval()
    out = []
    with torch.no_grad():
        for lo in range(0, len(queries), batch_size):
            part = queries.take(slice(lo, lo + batch_size))
            out.append(model(*as_tensors(part)).numpy())
    return np.concatenate(out).astype(np.float32)


def user_top_inputs(model, queries, batch_size=256):
    """[Q, user_top_in] float32: what the user top MLP sees per query."""
    model.eval()
    out = []
    with torch.no_grad():
        for lo in range(0, len(queries), batch_size):
            static, context, history, _ = as_tensors(
                queries.take(slice(lo, lo + batch_size)))
            out.append(model.user_top_inputs(static, context, history).numpy())
    return np.concatenate(out).astype(np.float32)


def varying_units(x, tol=1e-6):
    """Columns of x [rows, units] whose values differ between rows."""
    return int(np.sum(np.std(np.asarray(x, np.float64), axis=0) > tol))


def towers(model, queries):
    """How many units of u vary over `queries`' users and of v_j over the
    catalog, out of how many: a tower whose ReLUs all died (or stay
    constant) shows 0 and passes no gradient, so it cannot recover."""
    model.eval()
    with torch.no_grad():
        static, context, history, _ = as_tensors(queries)
        u = model.user_vector(static, context, history).numpy()
        v = model.item_vector(torch.arange(
            model.config["catalog"]["num_items"])).numpy()
    return {"user_units_varying": varying_units(u), "user_units": u.shape[1],
            "item_units_varying": varying_units(v), "item_units": v.shape[1]}


def _dead_tower(model, probe):
    t = towers(model, probe)
    for side in ("user", "item"):
        if t[f"{side}_units_varying"] == 0:
            return f"{side} tower dead (0/{t[f'{side}_units']} units vary)"
    return None


def table_lr(options, bag):
    """The Adam rate of a table whose bags have `bag` rows."""
    if not options.table_lr_bag:
        return options.embedding_lr
    return options.embedding_lr * min(1.0, options.table_lr_bag / bag)


def _optimizer(model, options):
    tables = list(model.user_tables) + list(model.item_tables)
    table_ids = {id(t.weight) for t in tables}
    mlps = [p for p in model.parameters() if id(p) not in table_ids]
    return torch.optim.Adam(
        [{"params": mlps, "lr": options.lr}] +
        [{"params": [t.weight], "lr": table_lr(options, t.bag)}
         for t in tables])


def _train_once(model, data, options, probe, restarts, log):
    """One training from the model's current weights; stops early and
    returns (stats, reason) when a tower dies."""
    rng = np.random.default_rng(options.seed)
    optimizer = _optimizer(model, options)
    loss_fn = nn.BCEWithLogitsLoss()
    stats = []
    for epoch in range(1, options.epochs + 1):
        start = time.perf_counter()
        model.train()
        order = rng.permutation(len(data.train))
        losses = []
        for lo in range(0, len(order), options.batch_size):
            part = data.train.take(order[lo:lo + options.batch_size])
            logits = model.logits(*as_tensors(part))
            loss = loss_fn(logits, torch.from_numpy(part.labels))
            optimizer.zero_grad()
            loss.backward()
            if options.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), options.grad_clip)
            optimizer.step()
            losses.append(loss.item())
        s = EpochStats(
            epoch, float(np.mean(losses)),
            metrics.auc(probe.labels, predict(model, probe)),
            metrics.auc(data.heldout.labels, predict(model, data.heldout)),
            time.perf_counter() - start, restarts)
        stats.append(s)
        log(f"epoch {s.epoch}: loss {s.loss:.4f}  train AUC "
            f"{s.train_auc:.4f}  held-out AUC {s.heldout_auc:.4f}  "
            f"({s.seconds:.1f} s)")
        dead = _dead_tower(model, probe)
        if dead:
            return stats, f"{dead} after epoch {epoch}"
    return stats, None


def train(model, data, options, log=lambda line: None):
    """Trains `model` on data.train; returns one EpochStats per epoch and
    calls `log` with a line for each. When a tower dies it draws all
    weights again (init seed options.seed + 1000 * restart) and starts
    over, at most options.restarts times."""
    probe = data.train.take(slice(0, options.eval_queries))
    dead = None
    for restart in range(options.restarts + 1):
        if restart:
            init_seed = options.seed + 1000 * restart
            log(f"restart {restart}/{options.restarts}: {dead}; weights "
                f"drawn again with init seed {init_seed}")
            torch.manual_seed(init_seed)
            model.reset_parameters()
        stats, dead = _train_once(model, data, options, probe, restart, log)
        if dead is None:
            return stats
    log(f"warning: {dead}, after {options.restarts} restart(s)")
    return stats
