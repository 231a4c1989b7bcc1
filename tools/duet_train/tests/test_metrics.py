"""Metrics on cases small enough to compute by hand."""
import math

import numpy as np
import pytest

from duet_train import metrics


def test_auc_counts_correctly_ordered_pairs():
    # Positives 0.9, 0.4; negatives 0.8, 0.1: 3 of 4 pairs ordered.
    assert metrics.auc([1, 0, 1, 0], [0.9, 0.8, 0.4, 0.1]) == 0.75
    assert metrics.auc([1, 0], [0.9, 0.1]) == 1.0
    assert metrics.auc([1, 0], [0.1, 0.9]) == 0.0


def test_auc_counts_ties_as_half():
    assert metrics.auc([1, 0], [0.5, 0.5]) == 0.5
    # (0.7 > 0.5) = 1, (0.5 = 0.5) = 1/2: 1.5 of 2 pairs.
    assert metrics.auc([1, 1, 0], [0.7, 0.5, 0.5]) == 0.75
    assert metrics.auc(np.array([[1, 0], [0, 1]]),
                       np.array([[2, 2], [2, 2]])) == 0.5


def test_auc_without_both_classes_is_nan():
    assert math.isnan(metrics.auc([1, 1], [0.2, 0.3]))


def test_log_loss():
    # -(ln 0.8 + ln 0.6) / 2
    assert metrics.log_loss([1, 0], [0.8, 0.4]) == pytest.approx(0.366985,
                                                                 abs=1e-6)
    # Clipped at 1e-7: -ln(1e-7).
    assert metrics.log_loss([0], [1.0]) == pytest.approx(16.118096, abs=1e-5)


def test_ndcg_by_hand():
    rel = [3, 2, 0, 1]
    scores = [0.1, 0.4, 0.3, 0.2]  # ranks items 1, 2, 3, 0
    # DCG = 2/1 + 0/log2 3 + 1/2 + 3/log2 5; IDCG = 3 + 2/log2 3 + 1/2.
    assert metrics.ndcg_at_k([rel], [scores], k=10)[0] == pytest.approx(
        3.792030 / 4.761860, abs=1e-6)
    # @2: DCG = 2, IDCG = 3 + 2/log2 3.
    assert metrics.ndcg_at_k([rel], [scores], k=2)[0] == pytest.approx(
        2 / 4.261860, abs=1e-6)
    assert metrics.ndcg_at_k([rel], [rel], k=3)[0] == 1.0


def test_ndcg_shares_discounts_within_ties():
    # Both items tie for positions 1 and 2; @1 the discounts are [1, 0].
    assert metrics.ndcg_at_k([[1, 0]], [[0.5, 0.5]], k=1)[0] == 0.5
    # A constant scorer is not credited with the stable sort's order.
    assert metrics.ndcg_at_k([[0, 1]], [[0.5, 0.5]], k=1)[0] == 0.5


def test_ndcg_per_query_and_nan_without_relevance():
    out = metrics.ndcg_at_k([[1, 0], [0, 0]], [[1, 0], [0, 1]])
    assert out[0] == 1.0 and math.isnan(out[1])
    with pytest.raises(ValueError, match="differ"):
        metrics.ndcg_at_k([[1, 0]], [[1, 0, 2]])


def test_popularity_baseline_smooths_toward_the_global_rate():
    pop = metrics.PopularityBaseline(4, [[0, 1], [0, 2]], [[1, 0], [1, 1]])
    # Global rate 3/4 with one pseudo-impression: (clicks + .75) / (shown + 1)
    np.testing.assert_allclose(pop.score([0, 1, 2, 3]),
                               [2.75 / 3, 0.75 / 2, 1.75 / 2, 0.75])
    assert pop.score([[3, 0]]).shape == (1, 2)
