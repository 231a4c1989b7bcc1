"""The synthetic log: deterministic, shaped as documented, and carrying the
planted click model."""
import numpy as np

from duet_train import data


def _log(seed=2):
    return data.generate(seed, num_items=100, num_static=5, num_dynamic=3,
                         history_len=7, train_users=40, queries_per_user=3,
                         train_candidates=10, heldout_users=6,
                         heldout_candidates=20)


def test_same_seed_same_log_other_seed_other_log():
    a, b, c = _log(), _log(), _log(3)
    for field in ("static", "context", "history", "candidates", "labels"):
        np.testing.assert_array_equal(getattr(a.train, field),
                                      getattr(b.train, field))
    assert not np.array_equal(a.train.candidates, c.train.candidates)


def test_shapes_and_ranges():
    d = _log()
    t, h = d.train, d.heldout
    assert len(t) == 120 and t.num_examples == 1200
    assert t.static.shape == (120, 5) and t.context.shape == (120, 3)
    assert t.history.shape == (120, 7) and h.candidates.shape == (6, 20)
    assert t.history.min() >= 0 and t.history.max() < 100
    # Static features are the user's; every query of a user repeats them.
    np.testing.assert_array_equal(t.static[0], t.static[2])
    assert set(np.unique(t.labels)) <= {0.0, 1.0}
    # Held-out users never train.
    assert not set(h.user) & set(t.user)
    # Candidates are distinct within a query.
    assert all(len(set(row)) == 20 for row in h.candidates)


def test_relevance_is_the_planted_click_probability():
    d = _log()
    h = d.heldout
    logit = d.world.click_logit(h.user, h.context.astype(np.float64),
                                h.candidates)
    np.testing.assert_allclose(h.relevance, 1 / (1 + np.exp(-logit)),
                               rtol=1e-5)
    # Tastes are distributions over genres; items have one genre each.
    np.testing.assert_allclose(d.world.theta.sum(axis=1), 1.0)
    assert np.all(d.world.phi.sum(axis=1) == 1)


def test_histories_and_liked_candidates_follow_tastes():
    d = data.generate(5, num_items=400, num_static=2, num_dynamic=1,
                      history_len=50, train_users=200, train_candidates=20)
    w, t = d.world, d.train
    genre = w.phi.argmax(axis=1)
    favourite = w.theta[t.user].argmax(axis=1)
    in_history = (genre[t.history] == favourite[:, None]).mean()
    liked = (genre[t.candidates[:, :10]] == favourite[:, None]).mean()
    random = (genre[t.candidates[:, 10:]] == favourite[:, None]).mean()
    # Uniform draws hit the favourite genre about 1 time in k = 4.
    assert in_history > 0.5 and liked > 0.5 and random < 0.35
