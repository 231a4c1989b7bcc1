"""A synthetic interaction log with planted structure, so every user's true
ranking is known.

The world (all from one seed), with k latent genres:
  theta_u = softmax(concentration * N(0, I))   user tastes over the genres
  phi_i   = one-hot genre of item i            item traits
  b_i     ~ N(0, 1)                            item popularity
  s_u = A theta_u sqrt(k) + N(0, noise^2)      static dense features (per user)
  c_q ~ N(0, I)                                per-query context
History of each query: H items drawn with replacement from
softmax(tau theta_u . phi_i + b_i), oldest first. The click model (`click_logit`):
  p = sigmoid(alpha (theta_u + M c_q) . phi_j + beta b_j + gamma (w . c_q) + bias)
so the context shifts which genres are wanted (M) and the overall rate (w).
Candidates of a query: half drawn without replacement from the user's taste
softmax, the rest uniformly from the other items; labels ~ Bernoulli(p).
Held-out queries belong to users that never appear in training.

Why genres and not dense traits: theta . phi with dense phi is a bilinear
form that a narrow ReLU combined top learns poorly; with one-hot traits it
is theta_u[genre(j)], which k hidden ReLU units represent exactly, so a
personalizing split can reach the planted ranking and the test can tell it
from the paper split, which can only learn one global order.
"""
import dataclasses

import numpy as np


@dataclasses.dataclass
class ClickModel:
    """Constants of the planted click and history models."""
    latent_dim: int = 4     # genres
    concentration: float = 2.0  # how peaked tastes are
    alpha: float = 4.0      # taste term
    beta: float = 1.0       # popularity
    gamma: float = 0.5      # context shift of the overall rate
    context_shift: float = 0.7  # M c has std context_shift / sqrt(k) per genre
    bias: float = -3.0
    history_temperature: float = 6.0
    static_noise: float = 0.5


@dataclasses.dataclass
class Queries:
    """Q queries of K candidates each; row q of every array is one query."""
    user: np.ndarray        # int64 [Q] index into World.theta
    static: np.ndarray      # float32 [Q, num_static]
    context: np.ndarray     # float32 [Q, num_dynamic]
    history: np.ndarray     # int64 [Q, H] item ids, oldest first
    candidates: np.ndarray  # int64 [Q, K]
    labels: np.ndarray      # float32 [Q, K] clicks (0/1)
    relevance: np.ndarray   # float32 [Q, K] planted click probability

    def __len__(self):
        return len(self.user)

    def take(self, rows):
        return Queries(**{f.name: getattr(self, f.name)[rows]
                          for f in dataclasses.fields(self)})

    @property
    def num_examples(self):
        return self.labels.size


@dataclasses.dataclass
class World:
    """The planted parameters: what a perfect model would know."""
    model: ClickModel
    theta: np.ndarray       # [U, k] tastes, rows sum to 1
    phi: np.ndarray         # [I, k] one-hot genres
    popularity: np.ndarray  # [I]
    static_map: np.ndarray  # A [num_static, k]
    context_map: np.ndarray  # M [k, num_dynamic]
    context_rate: np.ndarray  # w [num_dynamic]

    def taste_logits(self, users):
        """[len(users), I] logits of the history / liked-item softmax."""
        m = self.model
        return (m.history_temperature * (self.theta[users] @ self.phi.T)
                + self.popularity[None, :])

    def click_logit(self, users, context, items):
        """Planted click logit for users [Q], context [Q, m], items [Q, K]."""
        m = self.model
        want = self.theta[users] + context @ self.context_map.T  # [Q, k]
        taste = np.einsum("qk,qjk->qj", want, self.phi[items])
        return (m.alpha * taste + m.beta * self.popularity[items]
                + m.gamma * (context @ self.context_rate)[:, None] + m.bias)


@dataclasses.dataclass
class SyntheticData:
    world: World
    train: Queries
    heldout: Queries


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def make_world(rng, num_users, num_items, num_static, num_dynamic,
               model=ClickModel()):
    k = model.latent_dim
    logits = model.concentration * rng.normal(0.0, 1.0, (num_users, k))
    theta = np.exp(logits - logits.max(axis=1, keepdims=True))
    theta /= theta.sum(axis=1, keepdims=True)
    phi = np.eye(k)[rng.integers(0, k, num_items)]
    popularity = rng.normal(0.0, 1.0, num_items)
    static_map = rng.normal(0.0, 1.0, (num_static, k))
    shift = model.context_shift / np.sqrt(k * max(num_dynamic, 1))
    context_map = rng.normal(0.0, shift, (k, num_dynamic))
    context_rate = rng.normal(0.0, 1.0 / np.sqrt(max(num_dynamic, 1)),
                              num_dynamic)
    return World(model, theta, phi, popularity, static_map, context_map,
                 context_rate)


def _sample_histories(rng, world, users, length, chunk=512):
    """[len(users), length] draws with replacement from each user's taste
    softmax, by inverse CDF: row r's CDF is shifted by r so that one
    searchsorted over the flattened CDFs serves every row."""
    out = np.empty((len(users), length), dtype=np.int64)
    num_items = world.phi.shape[0]
    for lo in range(0, len(users), chunk):
        part = users[lo:lo + chunk]
        logits = world.taste_logits(part)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        cdf = np.cumsum(p, axis=1)
        cdf /= cdf[:, -1:]
        cdf[:, -1] = 1.0
        offset = np.arange(len(part))[:, None]
        u = rng.random((len(part), length))
        flat = np.searchsorted((cdf + offset).ravel(), (u + offset).ravel(),
                               side="right")
        out[lo:lo + len(part)] = (flat.reshape(len(part), length)
                                  - offset * num_items)
    return np.minimum(out, num_items - 1)


def _sample_candidates(rng, world, users, count, chunk=512):
    """[len(users), count] distinct items per row: count // 2 from the taste
    softmax without replacement (Gumbel top-k), the rest uniform."""
    liked = count // 2
    num_items = world.phi.shape[0]
    out = np.empty((len(users), count), dtype=np.int64)
    for lo in range(0, len(users), chunk):
        part = users[lo:lo + chunk]
        keys = world.taste_logits(part) + rng.gumbel(size=(len(part),
                                                           num_items))
        top = np.argpartition(-keys, liked - 1, axis=1)[:, :liked] \
            if liked else np.empty((len(part), 0), dtype=np.int64)
        rand = rng.random((len(part), num_items))
        np.put_along_axis(rand, top, 2.0, axis=1)
        rest = np.argpartition(rand, count - liked - 1,
                               axis=1)[:, :count - liked]
        out[lo:lo + len(part)] = np.concatenate([top, rest], axis=1)
    return out


def _make_queries(rng, world, users, per_user, num_candidates, history_len):
    """`per_user` queries for each user: same static features; a fresh
    history (the user's recent items at that time) and context each."""
    m = world.model
    num_dynamic = world.context_map.shape[1]
    static = (world.theta[users] * np.sqrt(m.latent_dim)) @ world.static_map.T
    static = static + rng.normal(0.0, m.static_noise, static.shape)
    q_users = np.repeat(users, per_user)
    rows = np.repeat(np.arange(len(users)), per_user)
    history = _sample_histories(rng, world, q_users, history_len)
    context = rng.normal(0.0, 1.0, (len(q_users), num_dynamic))
    candidates = _sample_candidates(rng, world, q_users, num_candidates)
    relevance = _sigmoid(world.click_logit(q_users, context, candidates))
    labels = (rng.random(relevance.shape) < relevance)
    return Queries(
        user=q_users.astype(np.int64),
        static=static[rows].astype(np.float32),
        context=context.astype(np.float32),
        history=history,
        candidates=candidates,
        labels=labels.astype(np.float32),
        relevance=relevance.astype(np.float32))


def generate(seed, num_items, num_static, num_dynamic, history_len,
             train_users=2000, queries_per_user=4, train_candidates=16,
             heldout_users=256, heldout_candidates=50, model=ClickModel()):
    """The world and its training log and held-out queries, all from `seed`.
    Users [0, train_users) train; the next `heldout_users` are held out,
    one query each."""
    if heldout_candidates > num_items or train_candidates > num_items:
        raise ValueError(f"{max(heldout_candidates, train_candidates)} "
                         f"candidates per query need at least as many items, "
                         f"the catalog has {num_items}")
    rng = np.random.default_rng(seed)
    world = make_world(rng, train_users + heldout_users, num_items,
                       num_static, num_dynamic, model)
    train = _make_queries(rng, world, np.arange(train_users), queries_per_user,
                          train_candidates, history_len)
    heldout = _make_queries(
        rng, world, np.arange(train_users, train_users + heldout_users), 1,
        heldout_candidates, history_len)
    return SyntheticData(world, train, heldout)
