"""The two towers: MLPs over user and item features, scored by a (normalised) dot product."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from recsys_notify.two_tower.config import ExperimentConfig


def _mlp(in_dim: int, hidden: list[int], out_dim: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU(), nn.Dropout(dropout)]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class TwoTower(nn.Module):
    """User and item towers; ``output`` picks plain dot, L2-normalised dot / temperature, or batch-normed dot.

    ``feature_state`` carries the fitted feature definition (clusters, normalisation, vocabularies) so a
    logged model is self-contained for serving.
    """

    def __init__(self, cfg: ExperimentConfig, user_dim: int, item_dim: int, n_items: int, n_creators: int,
                 feature_state: dict[str, Any] | None = None):
        super().__init__()
        self.cfg_dict = cfg.model_dump()
        self.feature_state = feature_state or {}
        self.output = cfg.output
        self.temperature = cfg.temperature
        extra = 0
        self.item_emb = self.creator_emb = None
        if "item_id" in cfg.id_embeddings:
            self.item_emb = nn.Embedding(n_items + 1, cfg.id_embedding_dim)
            extra += cfg.id_embedding_dim
        if "creator_id" in cfg.id_embeddings:
            self.creator_emb = nn.Embedding(n_creators + 1, cfg.id_embedding_dim)
            extra += cfg.id_embedding_dim
        for emb in (self.item_emb, self.creator_emb):
            if emb is not None:
                nn.init.normal_(emb.weight, std=0.01)
        self.user_tower = _mlp(max(user_dim, 1), cfg.hidden, cfg.out_dim, cfg.dropout)
        self.item_tower = _mlp(item_dim + extra, cfg.hidden, cfg.out_dim, cfg.dropout)
        if self.output == "batchnorm":
            self.user_bn = nn.BatchNorm1d(cfg.out_dim)
            self.item_bn = nn.BatchNorm1d(cfg.out_dim)

    @property
    def config(self) -> ExperimentConfig:
        return ExperimentConfig.model_validate(self.cfg_dict)

    def encode_users(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 0:
            x = torch.zeros(x.shape[0], 1)
        return self._finish(self.user_tower(x), "user")

    def encode_items(self, x: torch.Tensor, item_idx: torch.Tensor, creator_idx: torch.Tensor) -> torch.Tensor:
        parts = [x]
        if self.item_emb is not None:
            parts.append(self.item_emb(item_idx))
        if self.creator_emb is not None:
            parts.append(self.creator_emb(creator_idx))
        return self._finish(self.item_tower(torch.cat(parts, 1)), "item")

    def _finish(self, z: torch.Tensor, side: str) -> torch.Tensor:
        if self.output == "l2":
            return nn.functional.normalize(z, dim=1)
        if self.output == "batchnorm":
            return (self.user_bn if side == "user" else self.item_bn)(z)
        return z

    def similarity(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Row-wise score of aligned user/item vectors."""
        return self._scale((u * v).sum(1))

    def similarity_matrix(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self._scale(u @ v.T)

    def _scale(self, s: torch.Tensor) -> torch.Tensor:
        return s / self.temperature if self.output == "l2" else s

    def forward(self, user_x: torch.Tensor, item_x: torch.Tensor, item_idx: torch.Tensor,
                creator_idx: torch.Tensor) -> torch.Tensor:
        return self.similarity(self.encode_users(user_x), self.encode_items(item_x, item_idx, creator_idx))
