"""The GEM network and its serving wrapper.

``GemModel`` is a residual network from the content embedding to a unit-norm vector; only the
content vector goes in, so a brand-new item gets an embedding the moment it has content.
``GemEncoder`` bundles the trained model with the input scaling and the PCA rotation fitted on
its outputs, so the logged model turns a raw content embedding into exactly the stored vector.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class GemModel(nn.Module):
    """``normalize(content[:out_dim] + linear(content) + mlp(content))``, starting as content itself.

    The correction layers start at zero, so before training the model *is* the (truncated,
    PCA-ordered) content embedding; weight decay keeps it there unless the training signal
    says otherwise, which keeps cold-start outputs sane when pairs are few.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.linear = nn.Linear(in_dim, out_dim, bias=False)
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = x[:, :self.out_dim]
        if self.out_dim > self.in_dim:
            base = F.pad(base, (0, self.out_dim - self.in_dim))
        return F.normalize(base + self.linear(x) + self.mlp(x), dim=-1)


def build_model(in_dim: int, hidden_dim: int, out_dim: int, seed: int) -> GemModel:
    """A freshly initialised model; the same seed gives the same weights."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return GemModel(in_dim, hidden_dim, out_dim)
    finally:
        torch.random.set_rng_state(gen_state)


class GemEncoder(nn.Module):
    """Serving form: ``content -> (model(content / scale) - pca_mean) @ pca_components.T``."""

    def __init__(self, model: GemModel, input_scale: float, pca_mean: np.ndarray, pca_components: np.ndarray):
        super().__init__()
        self.model = model
        self.register_buffer("input_scale", torch.tensor(float(input_scale)))
        self.register_buffer("pca_mean", torch.as_tensor(pca_mean, dtype=torch.float32))
        self.register_buffer("pca_components", torch.as_tensor(pca_components, dtype=torch.float32))

    def forward(self, content: torch.Tensor) -> torch.Tensor:
        z = self.model(content / self.input_scale)
        return (z - self.pca_mean) @ self.pca_components.T


@torch.no_grad()
def encode(model: nn.Module, content: np.ndarray, batch_size: int = 65_536) -> np.ndarray:
    """Run ``model`` over a float32 matrix in batches (eval mode) and return float32 numpy."""
    model.eval()
    out = [model(torch.from_numpy(np.ascontiguousarray(content[i:i + batch_size]))).numpy()
           for i in range(0, len(content), batch_size)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)
