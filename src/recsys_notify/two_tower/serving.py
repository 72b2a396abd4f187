"""Serving the registered champion: ``load_champion(settings)`` -> :class:`ChampionRanker` or None.

The logged model carries its experiment config and fitted feature definition, so scoring rebuilds
the same features from the run's resolved inputs: a caller adds :meth:`ChampionRanker.requests` to
what it resolves (the model's event window ending on the history day and the catalogue of a day,
with the model's embedding source) and :meth:`ChampionRanker.bind` returns a scorer over them.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import torch

from recsys_notify.core.config import Settings
from recsys_notify.core.inputs import Inputs, Request
from recsys_notify.two_tower.config import ExperimentConfig
from recsys_notify.two_tower.data import Context, FeatureSpace, catalogue, events_from, requests
from recsys_notify.two_tower.model import TwoTower

CHAMPION = "champion"
CHALLENGER = "challenger"


class ChampionRanker:
    """A registered two-tower version, not yet bound to a day's features."""

    def __init__(self, model: TwoTower, version: str, run_id: str | None = None):
        self.model = model.eval()
        self.version = str(version)
        self.run_id = run_id

    @property
    def config(self) -> ExperimentConfig:
        return self.model.config

    @property
    def prefix(self) -> str:
        return f"model{self.version}_"

    def requests(self, history_end: date, catalogue_dt: date | None = None) -> dict[str, Request]:
        """Inputs its features need: history up to ``history_end``, the catalogue of ``catalogue_dt``."""
        return requests(self.config, history_end, catalogue_dt or history_end, self.prefix)

    def bind(self, inputs: Inputs) -> BoundRanker:
        """A scorer over the resolved :meth:`requests`."""
        space = FeatureSpace.from_state(self.model.feature_state, *catalogue(inputs, self.config, self.prefix))
        return BoundRanker(self.model, self.version, space, space.context(events_from(inputs, f"{self.prefix}events",
                                                                                      self.config)))


class BoundRanker:
    """A champion with its features built: scores (user, item) pairs, higher is better."""

    def __init__(self, model: TwoTower, version: str, space: FeatureSpace, ctx: Context):
        self.model, self.version, self.space, self.ctx = model, version, space, ctx

    def _encode(self, user_ids: np.ndarray, item_ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        item_idx, creator_idx = self.space.id_index(item_ids)
        with torch.no_grad():
            u = self.model.encode_users(torch.from_numpy(self.space.user_x(self.ctx, user_ids)))
            v = self.model.encode_items(torch.from_numpy(self.space.item_x(self.ctx, item_ids)),
                                        torch.from_numpy(item_idx), torch.from_numpy(creator_idx))
        return u, v

    def score(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """Scores of aligned (user, item) pairs; unknown item ids are an error."""
        user_ids = np.asarray(user_ids, dtype=np.int64)
        item_ids = np.asarray(item_ids, dtype=np.int64)
        if user_ids.shape != item_ids.shape or user_ids.ndim != 1:
            raise ValueError(f"user_ids and item_ids must be 1-d and aligned, "
                             f"got {user_ids.shape} and {item_ids.shape}")
        if len(user_ids) == 0:
            return np.zeros(0, np.float32)
        users, uinv = np.unique(user_ids, return_inverse=True)
        items, iinv = np.unique(item_ids, return_inverse=True)
        u, v = self._encode(users, items)
        with torch.no_grad():
            return self.model.similarity(u[torch.from_numpy(uinv)], v[torch.from_numpy(iinv)]).numpy()

    def score_matrix(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """(users, items) scores of every combination."""
        u, v = self._encode(np.asarray(user_ids, np.int64), np.asarray(item_ids, np.int64))
        with torch.no_grad():
            return self.model.similarity_matrix(u, v).numpy()


def _client(settings: Settings):
    from mlflow import MlflowClient

    from recsys_notify.core.tracking import configure

    configure(settings)
    return MlflowClient()


def load_version(settings: Settings, version: str | None = None, alias: str | None = None) -> ChampionRanker | None:
    """A registered version (or the one behind ``alias``); None when it does not exist."""
    import mlflow.pytorch
    from mlflow.exceptions import MlflowException

    name = settings.two_tower.registered_model
    client = _client(settings)
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, str(version))
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise
    model = mlflow.pytorch.load_model(f"models:/{name}/{mv.version}", map_location="cpu")
    return ChampionRanker(model, mv.version, mv.run_id)


def load_champion(settings: Settings) -> ChampionRanker | None:
    """The ``champion`` alias of ``settings.two_tower.registered_model``, or None if there is none."""
    return load_version(settings, alias=CHAMPION)

