"""Serving the registered champion: ``load_champion(settings)`` -> :class:`ChampionRanker` or None.

The logged model carries its experiment config and fitted feature definition, so scoring rebuilds
the same features from storage: the user history is the model's window ending on ``dt`` (inclusive)
and the catalogue is the items known on ``dt`` with the model's embedding source.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import numpy as np
import torch

from recsys_notify.config import Settings
from recsys_notify.storage import Storage, as_date
from recsys_notify.two_tower.config import ExperimentConfig
from recsys_notify.two_tower.data import EVENT_COLUMNS, Context, FeatureSpace, aggregate, catalogue, train_days
from recsys_notify.two_tower.model import TwoTower

CHAMPION = "champion"
CHALLENGER = "challenger"


class ChampionRanker:
    """A registered two-tower version ready to score (user, item) pairs."""

    def __init__(self, model: TwoTower, version: str, run_id: str | None = None):
        self.model = model.eval()
        self.version = str(version)
        self.run_id = run_id
        self._cached: tuple[Any, FeatureSpace, Context] | None = None

    @property
    def config(self) -> ExperimentConfig:
        return self.model.config

    def _features(self, storage: Storage, dt: date, catalogue_day: date | None = None) -> tuple[FeatureSpace, Context]:
        key = (storage.root_uri, dt, catalogue_day)
        if self._cached is None or self._cached[0] != key:
            cfg = self.config
            days = train_days(storage, dt + timedelta(days=1), cfg.window_days)
            events = aggregate(storage.read_range("events", days[0], days[-1], columns=EVENT_COLUMNS), cfg.label_rule)
            items = catalogue(storage, catalogue_day or dt, cfg.embedding_source, cfg.embedding_dim)
            space = FeatureSpace.from_state(self.model.feature_state, *items)
            self._cached = (key, space, space.context(events))
        return self._cached[1], self._cached[2]

    def _encode(self, storage: Storage, dt: date, user_ids: np.ndarray, item_ids: np.ndarray,
                catalogue_day: date | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        space, ctx = self._features(storage, as_date(dt), catalogue_day)
        item_idx, creator_idx = space.id_index(item_ids)
        with torch.no_grad():
            u = self.model.encode_users(torch.from_numpy(space.user_x(ctx, user_ids)))
            v = self.model.encode_items(torch.from_numpy(space.item_x(ctx, item_ids)),
                                        torch.from_numpy(item_idx), torch.from_numpy(creator_idx))
        return u, v

    def score(self, storage: Storage, dt: date, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """Scores of aligned (user, item) pairs, higher is better; unknown item ids are an error."""
        user_ids = np.asarray(user_ids, dtype=np.int64)
        item_ids = np.asarray(item_ids, dtype=np.int64)
        if user_ids.shape != item_ids.shape or user_ids.ndim != 1:
            raise ValueError(f"user_ids and item_ids must be 1-d and aligned, got {user_ids.shape} and {item_ids.shape}")
        if len(user_ids) == 0:
            return np.zeros(0, np.float32)
        users, uinv = np.unique(user_ids, return_inverse=True)
        items, iinv = np.unique(item_ids, return_inverse=True)
        u, v = self._encode(storage, dt, users, items)
        with torch.no_grad():
            return self.model.similarity(u[torch.from_numpy(uinv)], v[torch.from_numpy(iinv)]).numpy()

    def score_matrix(self, storage: Storage, dt: date, user_ids: np.ndarray, item_ids: np.ndarray,
                     catalogue_day: date | None = None) -> np.ndarray:
        """(users, items) scores of every combination; ``catalogue_day`` lets evaluation score items
        created on the validation day with the history of the day before."""
        u, v = self._encode(storage, dt, np.asarray(user_ids, np.int64), np.asarray(item_ids, np.int64),
                            catalogue_day)
        with torch.no_grad():
            return self.model.similarity_matrix(u, v).numpy()


def _client(settings: Settings):
    from mlflow import MlflowClient

    from recsys_notify.tracking import configure

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

