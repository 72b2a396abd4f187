"""Training loop: BCE on labelled pairs or in-batch sampled softmax with logQ correction, early stopping.

Sampled softmax treats the other positives of a batch as negatives. Popular items appear as in-batch
negatives more often than uniform sampling would, so their logits are corrected by ``-log q(item)``
(q = the item's share of training positives), the correction of Yi et al. (RecSys 2019).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from recsys_notify.two_tower.config import ExperimentConfig
from recsys_notify.two_tower.data import Prepared
from recsys_notify.two_tower.metrics import evaluate_impressions_only, evaluate_scorer
from recsys_notify.two_tower.model import TwoTower

EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class TrainResult:
    model: TwoTower
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    metrics: dict[str, float] = field(default_factory=dict)


def build_model(prep: Prepared) -> TwoTower:
    cfg = prep.space.cfg
    return TwoTower(cfg, prep.space.user_dim, prep.space.item_dim, len(prep.space.item_vocab),
                    len(prep.space.creator_vocab), prep.space.state())


def score_matrix_fn(model: TwoTower, prep: Prepared) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Scores of every (user, item) combination from the training-window history (no leave-one-out)."""
    space, ctx = prep.space, prep.ctx

    def score(user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            u = model.encode_users(torch.from_numpy(space.user_x(ctx, user_ids)))
            v = encode_items(model, prep, item_ids)
            return model.similarity_matrix(u, v).numpy()
    return score


def encode_items(model: TwoTower, prep: Prepared, item_ids: np.ndarray) -> torch.Tensor:
    item_idx, creator_idx = prep.space.id_index(item_ids)
    x = prep.space.item_x(prep.ctx, item_ids)
    return model.encode_items(torch.from_numpy(x), torch.from_numpy(item_idx), torch.from_numpy(creator_idx))


def evaluate_model(model: TwoTower, prep: Prepared, full: bool = True) -> dict[str, float]:
    """Impression metrics, plus full-catalogue ones when ``full`` (slower: every user x every candidate)."""
    model.eval()
    if not full:
        return evaluate_impressions_only(score_matrix_fn(model, prep), prep.valid, prep.space.cfg.name)
    vectors = prep.space.item_matrix[prep.space.item_index.get_indexer(np.sort(prep.candidates))]
    return evaluate_scorer(score_matrix_fn(model, prep), prep.valid, prep.seen, np.sort(prep.candidates), vectors,
                           model=prep.space.cfg.name)


def fit(prep: Prepared, cfg: ExperimentConfig | None = None, on_epoch: EpochCallback | None = None,
        primary: str = "ndcg_10") -> TrainResult:
    """Train, evaluating on the validation impressions after each epoch; keep the best epoch by ``primary``."""
    cfg = cfg or prep.space.cfg
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    model = build_model(prep)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    tensors = [torch.from_numpy(a) for a in (prep.train_user_x, prep.train_item_x, prep.train_item_id,
                                              prep.train_creator_id, prep.y, prep.w)]
    log_q = _log_q(prep) if cfg.loss == "sampled_softmax" else None
    result = TrainResult(model)
    best, best_state, waited = -np.inf, None, 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        rows = np.flatnonzero(prep.y > 0) if cfg.loss == "sampled_softmax" else np.arange(len(prep.y))
        rows = rows[rng.permutation(len(rows))]
        total, n = 0.0, 0
        for start in range(0, len(rows), cfg.batch_size):
            idx = torch.from_numpy(rows[start:start + cfg.batch_size])
            if len(idx) < 2:
                continue
            ux, ix, iid, cid, y, w = (t[idx] for t in tensors)
            if cfg.loss == "bce":
                logits = model(ux, ix, iid, cid)
                loss = (nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none") * w).sum() / w.sum()
            else:
                logits = model.similarity_matrix(model.encode_users(ux), model.encode_items(ix, iid, cid))
                if cfg.logq_correction:
                    logits = logits - log_q[idx][None, :]
                # the same item twice in a batch is not a negative for itself
                batch_items = prep.train_item_ids[idx.numpy()]
                same = iid[None, :] == iid[:, None] if model.item_emb is not None else \
                    torch.from_numpy(batch_items[None, :] == batch_items[:, None])
                logits = logits.masked_fill(same & ~torch.eye(len(idx), dtype=torch.bool), -1e9)
                per_row = nn.functional.cross_entropy(logits, torch.arange(len(idx)), reduction="none")
                loss = (per_row * w).sum() / w.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            n += len(idx)
        metrics = {"train_loss": total / max(n, 1), **_numeric(evaluate_model(model, prep, full=False))}
        result.history.append({"epoch": epoch, **metrics})
        if on_epoch:
            on_epoch(epoch, metrics)
        score = metrics.get(primary, float("nan"))
        if np.isfinite(score) and score > best:
            best, best_state, waited, result.best_epoch = score, copy.deepcopy(model.state_dict()), 0, epoch
        else:
            waited += 1
            if waited > cfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    result.metrics = {**_numeric(evaluate_model(model, prep)), "best_epoch": float(result.best_epoch)}
    return result


def _log_q(prep: Prepared) -> torch.Tensor:
    """log of each training row's item share among positives."""
    pos_items = pd.Series(prep.train_item_ids[prep.y > 0])
    share = pos_items.value_counts(normalize=True)
    q = pd.Series(prep.train_item_ids).map(share).fillna(share.min()).to_numpy(np.float32)
    return torch.from_numpy(np.log(q))


def _numeric(metrics: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}
