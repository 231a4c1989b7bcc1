"""Training loop and batched inference of DuetModel on a Queries log.

One optimizer step covers `batch_size` queries and all their candidates
(binary cross-entropy on the clicks), Adam with one learning rate for the
MLPs and one for the tables. Deterministic for a given seed with one thread
(the shuffling draws from a numpy generator seeded by it).
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
    lr: float = 1e-2           # MLPs
    embedding_lr: float = 3e-2  # tables
    seed: int = 1
    eval_queries: int = 512    # training queries scored for the train AUC


@dataclasses.dataclass
class EpochStats:
    epoch: int
    loss: float          # mean training loss over the epoch's steps
    train_auc: float
    heldout_auc: float
    seconds: float


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


def _optimizer(model, options):
    tables = [m.weight for m in model.modules()
              if isinstance(m, nn.EmbeddingBag)]
    table_ids = {id(p) for p in tables}
    mlps = [p for p in model.parameters() if id(p) not in table_ids]
    return torch.optim.Adam([{"params": mlps, "lr": options.lr},
                             {"params": tables, "lr": options.embedding_lr}])


def train(model, data, options, log=lambda line: None):
    """Trains `model` on data.train; returns one EpochStats per epoch and
    calls `log` with a line for each."""
    rng = np.random.default_rng(options.seed)
    optimizer = _optimizer(model, options)
    loss_fn = nn.BCEWithLogitsLoss()
    probe = data.train.take(slice(0, options.eval_queries))
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
            optimizer.step()
            losses.append(loss.item())
        s = EpochStats(
            epoch, float(np.mean(losses)),
            metrics.auc(probe.labels, predict(model, probe)),
            metrics.auc(data.heldout.labels, predict(model, data.heldout)),
            time.perf_counter() - start)
        stats.append(s)
        log(f"epoch {s.epoch}: loss {s.loss:.4f}  train AUC "
            f"{s.train_auc:.4f}  held-out AUC {s.heldout_auc:.4f}  "
            f"({s.seconds:.1f} s)")
    return stats
