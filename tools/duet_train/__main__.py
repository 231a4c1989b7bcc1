"""duet-train: trains the decomposed Duet model on a synthetic interaction log
with planted structure and exports a model directory (see --help).

Progress goes to stderr, the summary to stdout. Exit status: 0 on success,
1 on an error, 2 on bad usage.
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

from . import catalog, config as cfg, data, export, metrics, train
from .model import DuetModel

DESCRIPTION = """\
Trains the decomposed Duet DLRM (DESIGN.md §2) with PyTorch on a synthetic
interaction log whose click model is known, then writes DIR/model.pbtxt,
edge.safetensors (fp32 only; add the int8 user top MLP with `duet-model
quantize DIR --calibration DIR/calibration.safetensors`), cloud.safetensors,
user_tables.safetensors, calibration.safetensors and heldout.safetensors.
The architecture comes from `duet-model preset P --split S --json` or from
--config FILE.json (the same JSON)."""


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}")
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} must be positive")
        return value
    return parse


def _rows_scale(text):
    if text == "auto":
        return None
    value = _positive(float)(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text} must be in (0, 1] or auto")
    return value


def parse_args(argv):
    p = argparse.ArgumentParser(prog="duet-train", description=DESCRIPTION,
                                formatter_class=argparse.RawTextHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", help="preset name (tiny, rm1..rm5) asked of "
                     "duet-model")
    src.add_argument("--config", metavar="FILE.json",
                     help="architecture JSON instead of a preset")
    p.add_argument("--split", choices=("personalized", "paper"),
                   help="with --preset: the split (default personalized)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="model directory to write")
    p.add_argument("--seed", type=int, default=1,
                   help="data, weights and catalog seed (default 1)")
    p.add_argument("--epochs", type=_positive(int), default=6)
    p.add_argument("--width-scale", type=_positive(float), default=1.0,
                   help="multiply layer widths and dense counts (default 1)")
    p.add_argument("--rows-scale", type=_rows_scale, default=None,
                   help="multiply table rows, in (0, 1]; default auto: at "
                   "most 4 rows per catalog item")
    p.add_argument("--users", type=_positive(int), default=1000,
                   help="training users (default 1000)")
    p.add_argument("--queries-per-user", type=_positive(int), default=4)
    p.add_argument("--train-candidates", type=_positive(int), default=16,
                   help="candidates per training query (default 16)")
    p.add_argument("--heldout-users", type=_positive(int), default=256,
                   help="held-out users, one query each (default 256)")
    p.add_argument("--candidates", type=_positive(int), default=50,
                   help="candidates per held-out query (default 50)")
    p.add_argument("--items", type=_positive(int), default=200,
                   help="synthetic catalog size (default 200: about 300\n"
                   "impressions per item, enough to learn each item's genre\n"
                   "in a few epochs; raise --users with it)")
    p.add_argument("--genres", type=_positive(int),
                   default=data.ClickModel.latent_dim,
                   help="latent taste dimensions of the planted model "
                   f"(default {data.ClickModel.latent_dim})")
    p.add_argument("--batch-size", type=_positive(int), default=64,
                   help="queries per optimizer step (default 64)")
    p.add_argument("--lr", type=_positive(float), default=3e-3,
                   help="Adam learning rate of the MLPs (default 0.003)")
    p.add_argument("--embedding-lr", type=_positive(float), default=3e-2,
                   help="Adam learning rate of the tables (default 0.03),\n"
                   "times min(1, 8 / bag) for a table whose bags (history\n"
                   "length, lookups per item) are longer than 8")
    p.add_argument("--grad-clip", type=float, default=1.0,
                   help="clip the gradient's L2 norm (default 1; 0: off)")
    p.add_argument("--restarts", type=int, default=2,
                   help="when a tower dies (no unit of u or v varies after\n"
                   "an epoch), train again from other initial weights, at\n"
                   "most this often (default 2)")
    p.add_argument("--threads", type=_positive(int), default=1,
                   help="torch threads (default 1: bitwise reproducible)")
    p.add_argument("--name", help="model name (default <preset>-trained)")
    p.add_argument("--version", type=_positive(int), default=1)
    p.add_argument("--calibration", metavar="FILE",
                   help="default DIR/calibration.safetensors")
    p.add_argument("--calibration-samples", type=_positive(int), default=512)
    p.add_argument("--heldout", metavar="FILE",
                   help="default DIR/heldout.safetensors")
    p.add_argument("--duet-model", metavar="PATH",
                   help="duet-model binary (default $DUET_MODEL, then PATH)")
    args = p.parse_args(argv)
    if args.config and args.split:
        p.error("--split applies to --preset; a --config file has its own")
    if args.preset and not args.split:
        args.split = "personalized"
    return args


def architecture(args):
    """The architecture dict, scaled, with the trainer's catalog."""
    if args.config:
        base = cfg.load_config(args.config)
    else:
        tool = cfg.find_duet_model(args.duet_model)
        if tool is None:
            raise RuntimeError("cannot find duet-model: pass --duet-model "
                               "PATH, set DUET_MODEL, or use --config "
                               "FILE.json")
        base = cfg.preset_config(tool, args.preset, args.split)
    c = cfg.scale_widths(base, args.width_scale)
    rows_scale = args.rows_scale or cfg.auto_rows_scale(c, args.items)
    c = cfg.scale_rows(c, rows_scale)
    c["catalog"] = {"seed": catalog.mix(args.seed ^ 0xCA7A10),
                    "num_items": args.items}
    return c


def _description(args, c, base_name, d, stats, heldout):
    split = args.split if args.preset else "from config"
    return (f"Trained by duet-train on a synthetic log: preset {base_name}, "
            f"split {split} (split_depth {c['split_depth']}), seed "
            f"{args.seed}, {args.epochs} epochs, {len(d.train)} training "
            f"queries x {args.train_candidates} candidates "
            f"({d.train.num_examples} examples) from {args.users} users, "
            f"{args.items} items, {args.genres} genres, width scale "
            f"{args.width_scale:g}, rows scale {c['rows_scale']:g}; held-out "
            f"({len(d.heldout)} users x {args.candidates}): AUC "
            f"{heldout['auc']:.4f}, NDCG@10 {heldout['ndcg']:.4f}; final "
            f"loss {stats[-1].loss:.4f}")


def evaluate(d, ctr):
    h = d.heldout
    pop = metrics.PopularityBaseline(d.world.phi.shape[0], d.train.candidates,
                                     d.train.labels)
    return {
        "auc": metrics.auc(h.labels, ctr),
        "log_loss": metrics.log_loss(h.labels, ctr),
        "ndcg": float(np.nanmean(metrics.ndcg_at_k(h.relevance, ctr))),
        "planted_auc": metrics.auc(h.labels, h.relevance),
        "popularity_ndcg": float(np.nanmean(metrics.ndcg_at_k(
            h.relevance, pop.score(h.candidates)))),
    }


def run(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731

    c = architecture(args)
    base_name = c["name"]
    start = time.perf_counter()
    d = data.generate(
        args.seed, args.items, c["num_static_dense"], c["num_dynamic_dense"],
        cfg.history_length(c), train_users=args.users,
        queries_per_user=args.queries_per_user,
        train_candidates=args.train_candidates,
        heldout_users=args.heldout_users,
        heldout_candidates=args.candidates,
        model=data.ClickModel(latent_dim=args.genres))
    data_s = time.perf_counter() - start
    print(f"data: {len(d.train)} training queries ({d.train.num_examples} "
          f"examples), {len(d.heldout)} held-out queries x {args.candidates} "
          f"candidates, {args.items} items, history {cfg.history_length(c)}: "
          f"{data_s:.2f} s")

    start = time.perf_counter()
    model = DuetModel(c)
    options = train.TrainOptions(epochs=args.epochs, batch_size=args.batch_size,
                                 lr=args.lr, embedding_lr=args.embedding_lr,
                                 grad_clip=args.grad_clip,
                                 restarts=args.restarts, seed=args.seed)
    stats = train.train(model, d, options, log)
    train_s = time.perf_counter() - start
    print(f"train: {args.epochs} epochs, loss {stats[0].loss:.4f} -> "
          f"{stats[-1].loss:.4f}, train AUC {stats[-1].train_auc:.4f}: "
          f"{train_s:.2f} s")

    start = time.perf_counter()
    heldout_path = args.heldout or os.path.join(args.out, "heldout.safetensors")
    calibration_path = args.calibration or os.path.join(
        args.out, "calibration.safetensors")
    os.makedirs(args.out, exist_ok=True)
    ctr = export.write_heldout(model, d.heldout, heldout_path)
    h = evaluate(d, ctr)
    c.update(name=args.name or f"{base_name}-trained", version=args.version,
             seed=args.seed,
             description=_description(args, c, base_name, d, stats, h))
    final = export.write_model_dir(model, c, args.out)
    n = export.write_calibration(model, d.train, calibration_path,
                                 args.calibration_samples, args.seed)
    export_s = time.perf_counter() - start
    print(f"held-out: AUC {h['auc']:.4f} (planted model {h['planted_auc']:.4f})"
          f", log loss {h['log_loss']:.4f}, NDCG@10 {h['ndcg']:.4f} "
          f"(popularity {h['popularity_ndcg']:.4f})")
    print(f"export: {args.out} ({final['name']} v{final['version']}, "
          f"signature {final['signature']}), {n} calibration rows in "
          f"{calibration_path}, held-out set in {heldout_path}: "
          f"{export_s:.2f} s")


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run(args)
    except (RuntimeError, ValueError, OSError) as e:
        print(f"duet-train: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
