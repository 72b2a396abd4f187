"""Baselines evaluated with the same metrics: most-popular, ALS (``implicit``) and item-kNN.

Each is fitted on the training positives and exposes ``score_matrix(user_ids, item_ids)`` so
:func:`recsys_notify.two_tower.metrics.evaluate_scorer` treats it like the two-tower model.
Unknown users score 0 for every item; unknown items score 0 (most-popular, kNN) or the lowest value.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp


class _Indexed:
    def __init__(self, positives: pd.DataFrame):
        self.users = pd.Index(np.unique(positives["user_id"].to_numpy()))
        self.items = pd.Index(np.unique(positives["item_id"].to_numpy()))
        rows = self.users.get_indexer(positives["user_id"])
        cols = self.items.get_indexer(positives["item_id"])
        self.matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                                    shape=(len(self.users), len(self.items)))
        self.matrix.data[:] = 1.0  # duplicates count once

    def _gather(self, full: np.ndarray, user_ids: np.ndarray, item_ids: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Pick rows/cols of a (known users x known items) matrix; unknown ids get ``fill``."""
        u = self.users.get_indexer(user_ids)
        i = self.items.get_indexer(item_ids)
        out = full[np.clip(u, 0, None)][:, np.clip(i, 0, None)].astype(np.float64)
        out[u < 0] = fill
        out[:, i < 0] = fill
        return out


class MostPopular(_Indexed):
    """Items by number of training positives (the same list for everyone)."""

    def score_matrix(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        counts = np.asarray(self.matrix.sum(0)).ravel()
        i = self.items.get_indexer(item_ids)
        row = np.where(i >= 0, counts[np.clip(i, 0, None)], 0.0)
        return np.tile(row, (len(user_ids), 1))


class ALS(_Indexed):
    """Implicit-feedback matrix factorisation (Hu, Koren, Volinsky) via the ``implicit`` package."""

    def __init__(self, positives: pd.DataFrame, factors: int = 64, regularization: float = 0.05,
                 alpha: float = 20.0, iterations: int = 15, seed: int = 0):
        super().__init__(positives)
        from implicit.cpu.als import AlternatingLeastSquares

        self.model = AlternatingLeastSquares(factors=factors, regularization=regularization, alpha=alpha,
                                             iterations=iterations, random_state=seed, num_threads=1)
        self.model.fit(self.matrix, show_progress=False)

    def score_matrix(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        full = np.asarray(self.model.user_factors) @ np.asarray(self.model.item_factors).T
        return self._gather(full, user_ids, item_ids)


class ItemKNN(_Indexed):
    """Item-item cosine similarity over co-positive users, ``k`` neighbours per item; score = sum over history."""

    def __init__(self, positives: pd.DataFrame, k: int = 100, shrink: float = 10.0):
        super().__init__(positives)
        m = self.matrix.tocsc()
        norms = np.sqrt(np.asarray(m.multiply(m).sum(0)).ravel())
        co = (m.T @ m).toarray()
        sim = co / (np.outer(norms, norms) + shrink)
        np.fill_diagonal(sim, 0.0)
        if k < sim.shape[1]:
            cut = np.partition(sim, -k, axis=1)[:, -k][:, None]
            sim = np.where(sim >= cut, sim, 0.0)
        self.sim = sim.astype(np.float32)

    def score_matrix(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        full = self.matrix @ self.sim
        return self._gather(np.asarray(full), user_ids, item_ids)


BASELINES = {"most_popular": MostPopular, "als": ALS, "item_knn": ItemKNN}
