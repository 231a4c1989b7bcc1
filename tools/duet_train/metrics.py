"""Ranking and calibration metrics (numpy) and a popularity baseline.

Conventions: scores are higher-is-better; ties are resolved by averaging
(AUC: average ranks; NDCG: each tied item gets the mean discount of the
positions its tie group spans), so no metric depends on sort stability.
"""
import numpy as np


def _average_ranks(x):
    """1-based ranks of x ascending, ties given the mean of their ranks."""
    x = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # Group boundaries of equal values in sorted order.
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], len(xs)]
    mean_rank = (starts + ends + 1) / 2.0  # mean of starts+1 .. ends
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def auc(labels, scores):
    """Area under the ROC curve (Mann-Whitney U); NaN without both classes."""
    y = np.asarray(labels).ravel() > 0.5
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = _average_ranks(scores)
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def log_loss(labels, probs, eps=1e-7):
    """Mean binary cross-entropy with probabilities clipped to [eps, 1-eps]."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.clip(np.asarray(probs, dtype=np.float64).ravel(), eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log(1.0 - p)))


def _dcg(gains_sorted_desc_scores, tie_groups, k):
    """DCG@k of gains in score order, tie groups sharing their discounts."""
    n = len(gains_sorted_desc_scores)
    discount = np.zeros(n)
    top = min(k, n)
    discount[:top] = 1.0 / np.log2(np.arange(2, top + 2))
    total = 0.0
    for lo, hi in tie_groups:
        total += gains_sorted_desc_scores[lo:hi].sum() * discount[lo:hi].mean()
    return total


def ndcg_at_k(relevance, scores, k=10):
    """Per-query NDCG@k: [Q] array for relevance and scores of shape [Q, N].
    Gain is the graded relevance itself (e.g. the planted click probability),
    discount 1/log2(position + 1). A query with no relevance gets NaN."""
    rel = np.atleast_2d(np.asarray(relevance, dtype=np.float64))
    sc = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if rel.shape != sc.shape:
        raise ValueError(f"relevance {rel.shape} and scores {sc.shape} differ")
    out = np.empty(rel.shape[0])
    for q in range(rel.shape[0]):
        order = np.argsort(-sc[q], kind="mergesort")
        s = sc[q][order]
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
        groups = zip(starts, np.r_[starts[1:], len(s)])
        dcg = _dcg(rel[q][order], groups, k)
        ideal = np.sort(rel[q])[::-1]
        idcg = _dcg(ideal, ((i, i + 1) for i in range(len(ideal))), k)
        out[q] = dcg / idcg if idcg > 0 else np.nan
    return out


class PopularityBaseline:
    """Scores an item by its click rate in the training log, smoothed toward
    the global rate with `prior_weight` pseudo-impressions (an item never
    shown scores the global rate). The same order for every user: the
    floor a personalizing model must beat."""

    def __init__(self, num_items, candidates, labels, prior_weight=1.0):
        items = np.asarray(candidates, dtype=np.int64).ravel()
        y = np.asarray(labels, dtype=np.float64).ravel()
        shown = np.bincount(items, minlength=num_items)
        clicks = np.bincount(items, weights=y, minlength=num_items)
        rate = y.mean() if len(y) else 0.0
        self.click_rate = (clicks + prior_weight * rate) / (shown +
                                                             prior_weight)

    def score(self, candidates):
        return self.click_rate[np.asarray(candidates, dtype=np.int64)]
