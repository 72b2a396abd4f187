"""Full-catalogue baselines on a binary (users x items) train matrix, each tuned on valid with a small grid.

Most-popular, ItemKNN (cosine, k neighbours, shrink), implicit ALS, BPR (``implicit``'s) and EASE
(Steck 2019, closed form). ``fit(name, train, **params)`` returns a scorer ``user indices -> scores``
for :func:`recsys_notify.two_tower.protocols.evaluate`; :func:`tune` picks the grid point with the best
valid NDCG@10 and records every point, so the same selection rule applies to every model.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys_notify.two_tower.protocols import Scorer, Split, evaluate

GRIDS: dict[str, dict[str, list[Any]]] = {
    "most_popular": {},
    "item_knn": {"k": [50, 100, 200], "shrink": [0.0, 10.0]},
    "als": {"factors": [16, 32, 64], "regularization": [0.01, 1.0], "alpha": [1.0, 2.0, 5.0]},
    "bpr": {"factors": [64, 128], "iterations": [30, 50, 100]},
    "ease": {"lam": [100.0, 250.0, 500.0, 1000.0]},
}
QUICK_GRIDS: dict[str, dict[str, list[Any]]] = {
    "most_popular": {},
    "item_knn": {"k": [100], "shrink": [0.0, 10.0]},
    "als": {"factors": [16, 32], "regularization": [0.01], "alpha": [2.0]},
    "bpr": {"factors": [64], "iterations": [30, 50]},
    "ease": {"lam": [250.0, 500.0]},
}


def most_popular(train: sp.csr_matrix) -> Scorer:
    counts = np.asarray(train.sum(0), dtype=np.float64).ravel()
    return lambda u: np.tile(counts, (len(u), 1))


def item_knn(train: sp.csr_matrix, k: int = 100, shrink: float = 0.0) -> Scorer:
    """Cosine item-item similarity over co-interacting users, k neighbours kept per item."""
    x = train.astype(np.float64)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(0)).ravel())
    sim = (x.T @ x).toarray() / (np.outer(norms, norms) + shrink + 1e-12)
    np.fill_diagonal(sim, 0.0)
    if k < sim.shape[0]:
        cut = np.partition(sim, -k, axis=0)[-k]
        sim = np.where(sim >= cut[None, :], sim, 0.0)
    return lambda u: np.asarray(train[u] @ sim)


def ease(train: sp.csr_matrix, lam: float = 500.0) -> Scorer:
    """B = argmin ||X - XB||² + λ||B||² with diag(B) = 0, in closed form."""
    x = train.astype(np.float64)
    gram = (x.T @ x).toarray() + lam * np.eye(x.shape[1])
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return lambda u: np.asarray(train[u] @ b)


def als(train: sp.csr_matrix, factors: int = 64, regularization: float = 0.05, alpha: float = 1.0,
        iterations: int = 15, seed: int = 0) -> Scorer:
    from implicit.cpu.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(factors=factors, regularization=regularization, alpha=alpha,
                                    iterations=iterations, random_state=seed, num_threads=1)
    model.fit(train.astype(np.float32), show_progress=False)
    users, items = np.asarray(model.user_factors), np.asarray(model.item_factors)
    return lambda u: users[u] @ items.T


def bpr(train: sp.csr_matrix, factors: int = 64, learning_rate: float = 0.01, regularization: float = 0.01,
        iterations: int = 100, seed: int = 0) -> Scorer:
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    model = BayesianPersonalizedRanking(factors=factors, learning_rate=learning_rate,
                                        regularization=regularization, iterations=iterations,
                                        random_state=seed, num_threads=1)
    model.fit(train.astype(np.float32), show_progress=False)
    users, items = np.asarray(model.user_factors), np.asarray(model.item_factors)
    return lambda u: users[u] @ items.T


BASELINES: dict[str, Callable[..., Scorer]] = {"most_popular": most_popular, "item_knn": item_knn, "als": als,
                                              "bpr": bpr, "ease": ease}


@dataclass
class Tuned:
    """The selected grid point, its valid metrics, the fitted scorer and every grid point tried."""

    name: str
    params: dict[str, Any]
    valid: dict[str, float]
    scorer: Scorer
    train_seconds: float
    grid: list[dict[str, Any]] = field(default_factory=list)


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def tune(name: str, split: Split, grid: dict[str, list[Any]] | None = None, metric: str = "ndcg_10",
         **fixed: Any) -> Tuned:
    """Fit ``name`` on train at every grid point; keep the best by valid ``metric`` (first wins ties)."""
    best: Tuned | None = None
    tried = []
    for point in grid_points(GRIDS[name] if grid is None else grid):
        t0 = time.perf_counter()
        scorer = BASELINES[name](split.train, **fixed, **point)
        seconds = time.perf_counter() - t0
        valid = evaluate(scorer, split, "valid", model=name)
        tried.append({**point, f"valid_{metric}": valid[metric]})
        if best is None or valid[metric] > best.valid[metric]:
            best = Tuned(name, point, valid, scorer, seconds)
    assert best is not None
    best.grid = tried
    return best
