"""The two GEM training objectives.

``pairs``: contrastive learning on mined pairs. Positive pairs are drawn with probability
proportional to ``log1p(num_clients)`` *within* their content-similarity bucket and every bucket
gets the same share of each batch, so pairs that content already finds similar do not drown out
the co-engaged pairs content misses. Loss = symmetric InfoNCE over in-batch negatives plus a
logistic push-apart term on mined negative pairs (drawn the same balanced way).

``als``: fit implicit ALS on the window's interactions, then regress the model's output onto the
normalised ALS item factors with a cosine loss; items ALS never saw get embeddings zero-shot.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from scipy import sparse
from torch.nn import functional as F

from recsys_notify.core.config import GemSettings
from recsys_notify.gem.data import Items, Pairs
from recsys_notify.gem.model import GemModel

EpochHook = Callable[[int, float], None]


class BalancedSampler:
    """Draws pair indices with mass ~ ``weight`` inside each ``bucket`` and bucket shares set by ``balance``.

    A bucket's share of the draws is proportional to ``total_weight ** (1 - balance)``: ``balance`` 1
    gives every bucket the same share, 0 keeps the natural mix.
    """

    def __init__(self, bucket: np.ndarray, weight: np.ndarray, balance: float, rng: np.random.Generator):
        if len(bucket) == 0:
            raise ValueError("cannot sample from an empty set of pairs")
        present, inverse = np.unique(bucket, return_inverse=True)
        mass = np.bincount(inverse, weights=weight, minlength=len(present))
        share = mass ** (1.0 - balance)
        probs = weight / mass[inverse] * (share / share.sum())[inverse]
        self.probs = probs / probs.sum()
        self.rng = rng

    def sample(self, n: int) -> np.ndarray:
        return self.rng.choice(len(self.probs), size=n, p=self.probs)


def info_nce(a: torch.Tensor, b: torch.Tensor, a_ids: torch.Tensor, b_ids: torch.Tensor,
             temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE where row i's positive is column i; columns holding the same item are masked."""
    logits = a @ b.T / temperature
    eye = torch.eye(len(a), dtype=torch.bool)
    clash_ab = ((b_ids[None, :] == b_ids[:, None]) | (b_ids[None, :] == a_ids[:, None])) & ~eye
    clash_ba = ((a_ids[None, :] == a_ids[:, None]) | (a_ids[None, :] == b_ids[:, None])) & ~eye
    target = torch.arange(len(a))
    loss_ab = F.cross_entropy(logits.masked_fill(clash_ab, float("-inf")), target)
    loss_ba = F.cross_entropy(logits.T.masked_fill(clash_ba, float("-inf")), target)
    return (loss_ab + loss_ba) / 2


def pair_step_loss(model: GemModel, x: torch.Tensor, pos: tuple[np.ndarray, np.ndarray],
                   neg: tuple[np.ndarray, np.ndarray] | None, cfg: GemSettings) -> torch.Tensor:
    """Loss of one batch: InfoNCE on positives (+ weighted logistic loss pushing negatives apart)."""
    left, right = (torch.from_numpy(p) for p in pos)
    loss = info_nce(model(x[left]), model(x[right]), left, right, cfg.temperature)
    if neg is not None and cfg.negative_weight > 0:
        nl, nr = (torch.from_numpy(p) for p in neg)
        sim = (model(x[nl]) * model(x[nr])).sum(-1)
        loss = loss + cfg.negative_weight * F.softplus(sim / cfg.temperature).mean() * cfg.temperature
    return loss


def train_pairs(model: GemModel, x: torch.Tensor, pairs: Pairs, cfg: GemSettings,
                on_epoch: EpochHook | None = None) -> list[float]:
    """Train on mined pairs; an epoch draws as many positives as there are positive pairs."""
    rng = np.random.default_rng([cfg.seed, 1])
    pos, neg = pairs.subset(pairs.positive), pairs.subset(~pairs.positive)
    pos_sampler = BalancedSampler(pos.sim_bucket, np.log1p(pos.num_clients.astype(np.float64)), cfg.bucket_balance, rng)
    neg_sampler = BalancedSampler(neg.sim_bucket, np.ones(len(neg)), cfg.bucket_balance, rng) if len(neg) else None
    batch = min(cfg.batch_size, len(pos))
    steps = max(1, -(-len(pos) // batch))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    losses = []
    for epoch in range(cfg.epochs):
        model.train()
        total = 0.0
        for _ in range(steps):
            p = pos_sampler.sample(batch)
            n = neg_sampler.sample(batch) if neg_sampler else None
            loss = pair_step_loss(model, x, (pos.left[p], pos.right[p]),
                                  None if n is None else (neg.left[n], neg.right[n]), cfg)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        losses.append(total / steps)
        if on_epoch:
            on_epoch(epoch, losses[-1])
    return losses


def fit_als(interactions: pd.DataFrame, items: Items, exclude: np.ndarray, cfg: GemSettings,
            num_threads: int) -> tuple[np.ndarray, np.ndarray]:
    """ALS item factors for items with >= ``als_min_users`` users, never using ``exclude`` items.

    Returns ``(item positions, L2-normalised factors)``.
    """
    from implicit.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    if interactions.empty:
        raise ValueError("no interactions in the GEM window to fit ALS on")
    item_pos = items.positions(interactions["item_id"].to_numpy(), "events in the GEM window")
    keep = ~exclude[item_pos]
    item_pos = item_pos[keep]
    users = pd.factorize(interactions["user_id"].to_numpy()[keep])[0]
    matrix = sparse.csr_matrix(
        (interactions["weight"].to_numpy(np.float32)[keep], (users, item_pos)),
        shape=(int(users.max()) + 1 if len(users) else 0, len(items.ids)),
    )
    als = AlternatingLeastSquares(factors=cfg.als_factors, regularization=cfg.als_regularization,
                                  iterations=cfg.als_iterations, random_state=cfg.seed, num_threads=num_threads)
    with threadpool_limits(1, "blas"):
        als.fit(matrix, show_progress=False)
    n_users = np.bincount(item_pos, minlength=len(items.ids))
    trained = np.flatnonzero(n_users >= cfg.als_min_users)
    if len(trained) == 0:
        raise ValueError(f"no item has >= {cfg.als_min_users} users in the GEM window; lower gem.als_min_users")
    factors = np.asarray(als.item_factors)[trained]
    factors = factors / np.maximum(np.linalg.norm(factors, axis=1, keepdims=True), 1e-12)
    return trained, factors.astype(np.float32)


def train_als(model: GemModel, x: torch.Tensor, positions: np.ndarray, targets: np.ndarray, cfg: GemSettings,
              on_epoch: EpochHook | None = None) -> list[float]:
    """Regress unit-norm model outputs onto the ALS factors (loss = 1 - cosine)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    pos_t, tgt_t = torch.from_numpy(positions), torch.from_numpy(targets)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    losses = []
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(pos_t), generator=gen)
        total, steps = 0.0, 0
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            loss = (1 - (model(x[pos_t[idx]]) * tgt_t[idx]).sum(-1)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, steps = total + loss.item(), steps + 1
        losses.append(total / steps)
        if on_epoch:
            on_epoch(epoch, losses[-1])
    return losses
