"""History two-tower for full-catalogue ranking, trained with a squared loss over the whole catalogue.

User tower: the user's train items pooled through their own (input) embeddings, ``sum / n**0.5``
(FISM-style), plus a user id embedding. Item tower: item id embedding plus a linear map of the item
features (genres, title, year), plus an item bias. Score = dot product.

Training sees every (user, item) cell of a batch of users, so there is no negative sampling and no
softmax: loss = Σ w·(x − s)² with w = 1 on positives and ``neg_weight`` on the rest (the weighted
matrix-factorisation / EASE objective). The history input is randomly thinned (``history_dropout``,
denoising) so the tower cannot just copy its input. Epochs are chosen on valid NDCG@10 with early
stopping; test is never looked at.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from recsys_notify.two_tower.protocols import Scorer, Split, evaluate


@dataclass
class HistoryConfig:
    dim: int = 256
    history_dropout: float = 0.3
    neg_weight: float = 0.6
    lr: float = 1e-3
    weight_decay: float = 0.1
    batch_users: int = 128
    epochs: int = 200
    eval_every: int = 5
    patience: int = 3
    seed: int = 0
    threads: int = 1


class HistoryTwoTower(nn.Module):
    def __init__(self, n_users: int, n_items: int, item_features: np.ndarray | None, dim: int):
        super().__init__()
        self.history = nn.Embedding(n_items, dim)
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        for emb in (self.history, self.user, self.item):
            nn.init.normal_(emb.weight, std=0.01)
        self.item_bias = nn.Parameter(torch.zeros(n_items))
        feats = np.zeros((n_items, 0), np.float32) if item_features is None else item_features
        self.register_buffer("features", torch.as_tensor(feats, dtype=torch.float32))
        self.feature_map = nn.Linear(self.features.shape[1], dim, bias=False) if feats.shape[1] else None

    def user_vectors(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        n = history.sum(1, keepdim=True).clamp(min=1.0)
        return history @ self.history.weight / n.sqrt() + self.user(users)

    def item_vectors(self) -> torch.Tensor:
        v = self.item.weight
        return v + self.feature_map(self.features) if self.feature_map is not None else v

    def forward(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return self.user_vectors(users, history) @ self.item_vectors().T + self.item_bias


@dataclass
class HistoryResult:
    model: HistoryTwoTower
    scorer: Scorer
    best_epoch: int
    valid: dict[str, float]
    train_seconds: float
    examples: int  # (user, item) cells trained on, for throughput
    history: list[dict[str, float]] = field(default_factory=list)


def fit_history(split: Split, cfg: HistoryConfig, item_features: np.ndarray | None = None) -> HistoryResult:
    """Train on ``split.train``; keep the epoch with the best valid NDCG@10 (early stopping)."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    x = torch.as_tensor(split.train.toarray(), dtype=torch.float32)
    n_users, n_items = x.shape
    model = HistoryTwoTower(n_users, n_items, item_features, cfg.dim)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    active = np.flatnonzero(np.diff(split.train.indptr) > 0)

    def scorer(u: np.ndarray) -> np.ndarray:
        model.eval()
        with torch.no_grad():
            ut = torch.as_tensor(u, dtype=torch.long)
            return model(ut, x[ut]).double().numpy()

    best_state, best, best_epoch, since, log = None, -np.inf, 0, 0, []
    examples, t0 = 0, time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        total = 0.0
        order = torch.as_tensor(rng.permutation(active))
        for start in range(0, len(active), cfg.batch_users):
            u = order[start:start + cfg.batch_users]
            target = x[u]
            keep = (torch.rand(target.shape) >= cfg.history_dropout).float()
            s = model(u, target * keep)
            w = cfg.neg_weight + (1.0 - cfg.neg_weight) * target
            loss = (w * (target - s) ** 2).sum() / len(u)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(u)
            examples += target.numel()
        if epoch % cfg.eval_every and epoch != cfg.epochs:
            continue
        metrics = evaluate(scorer, split, "valid", model="history_two_tower")
        log.append({"epoch": epoch, "train_loss": total / len(active), **metrics})
        if metrics["ndcg_10"] > best:
            best, best_epoch, since = metrics["ndcg_10"], epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            since += 1
            if since >= cfg.patience:
                break
    seconds = time.perf_counter() - t0
    assert best_state is not None
    model.load_state_dict(best_state)
    valid = next(r for r in log if r["epoch"] == best_epoch)
    return HistoryResult(model, scorer, best_epoch, valid, seconds, examples, log)
