"""Training on the planted log: the loss falls, held-out AUC is clearly above
chance, and a personalizing split learns the per-user ranking that the paper
split (one linear combined layer: one global order) cannot."""
import numpy as np
import pytest
import torch

from duet_train import config as cfg, data, metrics, train
from duet_train.model import DuetModel
from conftest import tiny_config

ITEMS = 200


def _train(split, d, seed=1, epochs=6):
    c = tiny_config(split, num_items=ITEMS)
    torch.manual_seed(seed)
    model = DuetModel(c)
    stats = train.train(model, d, train.TrainOptions(epochs=epochs, seed=seed))
    return model, stats, train.predict(model, d.heldout)


@pytest.fixture(scope="module")
def log():
    torch.set_num_threads(1)
    c = tiny_config()
    return data.generate(1, ITEMS, c["num_static_dense"],
                         c["num_dynamic_dense"], cfg.history_length(c),
                         train_users=1000,
                         model=data.ClickModel())


@pytest.fixture(scope="module")
def personalized(log):
    return _train("personalized", log)


def test_loss_falls_and_heldout_auc_beats_chance(log, personalized):
    _, stats, ctr = personalized
    assert stats[-1].loss < stats[0].loss - 0.05, [s.loss for s in stats]
    assert stats[-1].heldout_auc > 0.7
    assert metrics.auc(log.heldout.labels, ctr) == pytest.approx(
        stats[-1].heldout_auc)
    # Sanity of the planted log itself: the true click probability ranks
    # better than anything learned.
    assert metrics.auc(log.heldout.labels, log.heldout.relevance) > \
        stats[-1].heldout_auc


def test_personalizing_split_learns_what_the_paper_split_cannot(
        log, personalized):
    _, _, ctr_personal = personalized
    _, _, ctr_paper = _train("paper", log)
    rel = log.heldout.relevance
    personal = np.mean(metrics.ndcg_at_k(rel, ctr_personal))
    paper = np.mean(metrics.ndcg_at_k(rel, ctr_paper))
    pop = metrics.PopularityBaseline(ITEMS, log.train.candidates,
                                     log.train.labels)
    popularity = np.mean(metrics.ndcg_at_k(rel, pop.score(
        log.heldout.candidates)))
    # Measured over data seeds 1-6 (this file's settings): personalized
    # minus paper 0.065-0.12; the paper split stays near popularity.
    assert personal > paper + 0.04, (personal, paper)
    assert personal > popularity + 0.04, (personal, popularity)
    assert paper < popularity + 0.03, (paper, popularity)


def test_paper_split_ranks_every_users_candidates_alike(log):
    """sigmoid(w_u . u + w_v . v_j + b): the user only shifts every logit."""
    model, _, _ = _train("paper", log, epochs=1)
    items = torch.arange(ITEMS)[None, :].repeat(2, 1)
    h = log.heldout
    with torch.no_grad():
        logits = model.logits(torch.from_numpy(h.static[:2]),
                              torch.from_numpy(h.context[:2]),
                              torch.from_numpy(h.history[:2]), items)
    shift = (logits[0] - logits[1]).numpy()
    np.testing.assert_allclose(shift, shift[0], atol=1e-4)


def test_training_is_deterministic(log):
    small = log.train.take(slice(0, 64))
    d = data.SyntheticData(log.world, small, log.heldout.take(slice(0, 8)))
    weights = []
    for _ in range(2):
        c = tiny_config(num_items=ITEMS)
        torch.manual_seed(4)
        model = DuetModel(c)
        train.train(model, d, train.TrainOptions(epochs=1, batch_size=16,
                                                 seed=4))
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
    assert weights[0].keys() == weights[1].keys()
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), k
