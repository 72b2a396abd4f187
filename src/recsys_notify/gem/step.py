"""The gem step: train the generic embedding model for a date and write ``gem_embeddings``.

Resolves the run date's mined pairs, the items as of the date (and, for the ``als`` objective, the
window's events) once; holds out a share of items as cold-start probes, trains on the rest, fits a
PCA on the model's outputs for every known item so the first values carry the most variance (like
the content embeddings), writes ``gem_embeddings`` for the date and logs everything to MLflow.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa

from recsys_notify.core import tracking
from recsys_notify.core.config import ConfigError, GemSettings, Settings
from recsys_notify.core.datasets import EVENTS, GEM_EMBEDDINGS, ITEMS, PAIRS, TRUTH_ITEMS
from recsys_notify.core.embeddings import VECTORS
from recsys_notify.core.inputs import Inputs, as_of, day, resolve, window
from recsys_notify.core.interaction_weights import EVENT_COLUMNS
from recsys_notify.core.step import StepResult, parse_params
from recsys_notify.core.storage import Storage
from recsys_notify.gem.data import PAIR_COLUMNS, choose_holdout, interactions_from, items_from, pairs_from
from recsys_notify.gem.evaluation import compare, partner_lists, truth_labels

NAME = "gem"


def _eval_queries(holdout: np.ndarray, cfg: GemSettings) -> np.ndarray:
    queries = np.flatnonzero(holdout)
    if len(queries) > cfg.max_eval_items:
        queries = np.sort(np.random.default_rng([cfg.seed, 11]).choice(queries, cfg.max_eval_items, replace=False))
    return queries


def _embedding_table(ids: np.ndarray, vectors: np.ndarray) -> pa.Table:
    flat = pa.array(vectors.astype(np.float32).ravel(), type=pa.float32())
    offsets = pa.array(np.arange(0, vectors.size + 1, vectors.shape[1], dtype=np.int32))
    return pa.table({"item_id": pa.array(ids, pa.int64()), "embedding": pa.ListArray.from_arrays(offsets, flat)})


def _plot(losses: list[float], metrics: dict[str, float], k: int, objective: str) -> None:
    with tracking.logged_figure("gem_training.png", 1, 2, figsize=(11, 4)) as (_, (left, right)):
        left.plot(range(1, len(losses) + 1), losses, marker="o")
        left.set(title=f"GEM training loss ({objective})", xlabel="epoch", ylabel="loss")
        names = [m for m in ("recall", "topic_precision", "style_precision") if f"gem_{m}_at_{k}" in metrics]
        sets = ["content", "gem", "content_trimmed", "gem_trimmed"]
        width = 0.8 / len(sets)
        for i, name in enumerate(sets):
            right.bar(np.arange(len(names)) + i * width, [metrics[f"{name}_{m}_at_{k}"] for m in names], width,
                      label=name)
        right.set_xticks(np.arange(len(names)) + 0.4 - width / 2, [f"{m}@{k}" for m in names])
        right.set(title="cold-start items (held out)", ylim=(0, 1))
        right.legend()


def resolve_inputs(storage: Storage, dt: date, cfg: GemSettings) -> Inputs:
    requests = {"pairs": day(PAIRS, dt), VECTORS: as_of(ITEMS, dt), "truth": as_of(TRUTH_ITEMS, dt, required=False)}
    if cfg.objective == "als":
        requests["events"] = window(EVENTS, dt, cfg.window_days)
    return resolve(storage, requests)


def run(storage: Storage, settings: Settings, dt: date, params: dict[str, Any] | None = None) -> StepResult:
    """Train GEM for ``dt``, write ``gem_embeddings`` for every item known on ``dt``, track the run."""
    import mlflow
    import mlflow.pytorch
    import torch
    from sklearn.decomposition import PCA

    from recsys_notify.gem.model import GemEncoder, build_model, encode
    from recsys_notify.gem.objectives import fit_als, train_als, train_pairs

    settings, _ = parse_params(settings, NAME, params)
    cfg = settings.gem
    if cfg.objective == "als" and cfg.out_dim > cfg.als_factors:
        raise ConfigError(f"gem.out_dim ({cfg.out_dim}) cannot exceed gem.als_factors ({cfg.als_factors}) "
                          "for the als objective: the stored vectors are PCA components of the ALS-sized output")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)

    # ---- read and check every input before anything is trained or written ----
    inputs = resolve_inputs(storage, dt, cfg)
    items = items_from(inputs.dimension(VECTORS, ["item_id", "embedding"]), dt)
    pairs = pairs_from(inputs.frame("pairs", PAIR_COLUMNS), dt, items)
    holdout = choose_holdout(pairs, len(items.ids), cfg.holdout_fraction, cfg.seed)
    train_set = pairs.subset(~holdout[pairs.left] & ~holdout[pairs.right])
    if not train_set.positive.any():
        raise ValueError(f"pairs dt={dt}: no positive pair left for training after holding out cold-start items")
    if cfg.objective == "als":
        events = inputs.frame("events", [*EVENT_COLUMNS, "watch_time_s"])
        interactions = interactions_from(events, settings)
        als_pos, als_targets = fit_als(interactions, items, holdout, cfg, torch.get_num_threads())
    model_dim = cfg.als_factors if cfg.objective == "als" else cfg.out_dim
    queries = _eval_queries(holdout, cfg)
    partners = partner_lists(pairs, queries)
    topic, style = truth_labels(inputs.dimension("truth", ["item_id", "topic", "style"]), items)

    scale = float(np.linalg.norm(items.content, axis=1).mean())
    x = torch.from_numpy(items.content / scale)
    model = build_model(items.content.shape[1], cfg.hidden_dim, model_dim, cfg.seed)
    torch.manual_seed(cfg.seed)
    counts = {"items": len(items.ids), "holdout_items": int(holdout.sum()), "eval_items": len(queries),
              "train_positive_pairs": int(train_set.positive.sum()),
              "train_negative_pairs": int((~train_set.positive).sum())}
    if cfg.objective == "als":
        counts["als_items"] = len(als_pos)
        counts["als_interactions"] = len(interactions)

    run_params = {**cfg.model_dump(), "dt": dt.isoformat(), **counts}
    with tracking.tracked_run(cfg.experiment, f"gem-{cfg.objective}-{dt:%Y%m%d}", params=run_params,
                              tags={"dt": dt.isoformat(), "objective": cfg.objective, "step": NAME},
                              settings=settings) as active:
        tracking.log_lineage(inputs)

        def log_epoch(epoch: int, loss: float) -> None:
            mlflow.log_metric("train_loss", loss, step=epoch)

        if cfg.objective == "pairs":
            losses = train_pairs(model, x, train_set, cfg, log_epoch)
        else:
            losses = train_als(model, x, als_pos, als_targets, cfg, log_epoch)

        raw = encode(model, items.content / scale)
        pca = PCA(n_components=cfg.out_dim, svd_solver="full", random_state=cfg.seed).fit(raw)
        encoder = GemEncoder(model, scale, pca.mean_, pca.components_)
        vectors = encode(encoder, items.content)
        trim = settings.embedding.trimmed_dim
        metrics = compare({"gem": vectors, "content": items.content,
                           "gem_trimmed": vectors[:, :trim], "content_trimmed": items.content[:, :trim]},
                          queries, partners, cfg.eval_k, topic, style)
        metrics[f"pca_top{trim}_variance_share"] = float(pca.explained_variance_ratio_[:trim].sum())
        metrics["final_train_loss"] = losses[-1]
        mlflow.log_metrics(metrics)

        written = storage.write(GEM_EMBEDDINGS.name, dt, _embedding_table(items.ids, vectors),
                                metadata={"mlflow_run_id": active.info.run_id, "objective": cfg.objective,
                                          "out_dim": cfg.out_dim})
        _plot(losses, metrics, cfg.eval_k, cfg.objective)
        mlflow.log_dict({"losses": losses, **metrics, **counts}, "gem_summary.json")
        mlflow.pytorch.log_model(encoder, name="model", input_example=items.content[:2],
                                 pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])

    summary = {"objective": cfg.objective, "out_dim": cfg.out_dim, "losses": [round(v, 5) for v in losses],
               **counts, **{k: round(v, 4) for k, v in metrics.items()}}
    return StepResult(NAME, dt, {GEM_EMBEDDINGS.name: written.rows}, summary, inputs.summary(),
                      **tracking.run_ids(active))
