"""``train_gem``: the daily GEM step (DAG task and ``recsys-notify train-gem`` call it).

Reads the run date's mined pairs (and, for the ``als`` objective, the window's events), holds
out a share of items as cold-start probes, trains the model on the rest, fits a PCA on the model's
outputs for every known item so the first values carry the most variance (like the content
embeddings), writes ``gem_embeddings`` for that date and logs everything to MLflow.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
from pydantic import ValidationError

from recsys_notify.config import ConfigError, GemSettings, Settings, get_settings
from recsys_notify.gem.evaluation import compare, partner_lists
from recsys_notify.gem.inputs import Items, choose_holdout, load_interactions, load_items, load_pairs
from recsys_notify.interaction_weights import window_start
from recsys_notify.storage import Storage, as_date
from recsys_notify import tracking


def gem_config(settings: Settings, overrides: dict[str, Any] | None = None) -> GemSettings:
    """``settings.gem`` with run-level overrides (DAG params, CLI flags) validated like the config file."""
    values = {k: v for k, v in (overrides or {}).items() if v is not None}
    try:
        return GemSettings.model_validate({**settings.gem.model_dump(), **values})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid gem parameters: {problems}") from None


def _truth_labels(storage: Storage, dt: date, items: Items) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Generator topic/style per item for evaluation, or ``(None, None)`` outside synthetic data."""
    if not any(d <= dt for d in storage.dates("truth_items")):
        return None, None
    truth = storage.read_upto("truth_items", dt, columns=["item_id", "topic", "style"]).set_index("item_id")
    unknown = -1 - np.arange(len(items.ids))  # items without truth never count as a match
    topic = truth["topic"].reindex(items.ids).to_numpy(dtype=np.float64)
    style = truth["style"].reindex(items.ids).to_numpy(dtype=np.float64)
    return np.where(np.isnan(topic), unknown, topic), np.where(np.isnan(style), unknown, style)


def _eval_queries(holdout: np.ndarray, cfg: GemSettings) -> np.ndarray:
    queries = np.flatnonzero(holdout)
    if len(queries) > cfg.max_eval_items:
        queries = np.sort(np.random.default_rng([cfg.seed, 11]).choice(queries, cfg.max_eval_items, replace=False))
    return queries


def _embedding_table(ids: np.ndarray, vectors: np.ndarray):
    import pyarrow as pa

    flat = pa.array(vectors.astype(np.float32).ravel(), type=pa.float32())
    offsets = pa.array(np.arange(0, vectors.size + 1, vectors.shape[1], dtype=np.int32))
    return pa.table({"item_id": pa.array(ids, pa.int64()), "embedding": pa.ListArray.from_arrays(offsets, flat)})


def _plot(losses: list[float], metrics: dict[str, float], k: int, objective: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(range(1, len(losses) + 1), losses, marker="o")
    left.set(title=f"GEM training loss ({objective})", xlabel="epoch", ylabel="loss")
    names = [m for m in ("recall", "topic_precision", "style_precision") if f"gem_{m}_at_{k}" in metrics]
    sets = ["content", "gem", "content_trimmed", "gem_trimmed"]
    width = 0.8 / len(sets)
    for i, name in enumerate(sets):
        right.bar(np.arange(len(names)) + i * width, [metrics[f"{name}_{m}_at_{k}"] for m in names], width, label=name)
    right.set_xticks(np.arange(len(names)) + 0.4 - width / 2, [f"{m}@{k}" for m in names])
    right.set(title="cold-start items (held out)", ylim=(0, 1))
    right.legend()
    fig.tight_layout()
    return fig


def _close_figure(figure) -> None:
    import matplotlib.pyplot as plt

    plt.close(figure)


def train_gem(storage: Storage, dt: date | str, settings: Settings | None = None, **overrides: Any) -> dict[str, Any]:
    """Train GEM for ``dt``, write ``gem_embeddings`` for every item known on ``dt``, return a summary."""
    import mlflow
    import mlflow.pytorch
    import torch
    from sklearn.decomposition import PCA

    from recsys_notify.gem.model import GemEncoder, build_model, encode
    from recsys_notify.gem.objectives import fit_als, train_als, train_pairs

    settings = settings or get_settings()
    cfg = gem_config(settings, overrides)
    day = as_date(dt)
    if cfg.objective == "als" and cfg.out_dim > cfg.als_factors:
        raise ConfigError(f"gem.out_dim ({cfg.out_dim}) cannot exceed gem.als_factors ({cfg.als_factors}) "
                          "for the als objective: the stored vectors are PCA components of the ALS-sized output")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)

    # ---- read and check every input before anything is trained or written ----
    items = load_items(storage, day)
    pairs = load_pairs(storage, day, items)
    holdout = choose_holdout(pairs, len(items.ids), cfg.holdout_fraction, cfg.seed)
    train_set = pairs.subset(~holdout[pairs.left] & ~holdout[pairs.right])
    if not train_set.positive.any():
        raise ValueError(f"pairs dt={day}: no positive pair left for training after holding out cold-start items")
    if cfg.objective == "als":
        interactions = load_interactions(storage, settings, day)
        als_pos, als_targets = fit_als(interactions, items, holdout, cfg, torch.get_num_threads())
    model_dim = cfg.als_factors if cfg.objective == "als" else cfg.out_dim
    queries = _eval_queries(holdout, cfg)
    partners = partner_lists(pairs, queries)
    topic, style = _truth_labels(storage, day, items)

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

    params = {**cfg.model_dump(), "dt": day.isoformat(), **counts}
    with tracking.tracked_run(cfg.experiment, f"gem-{cfg.objective}-{day:%Y%m%d}", params=params,
                              tags={"dt": day.isoformat(), "objective": cfg.objective}, settings=settings) as run:
        tracking.log_partition_inputs(storage, "pairs", day)
        if cfg.objective == "als":
            first = window_start(storage, day, cfg.window_days)
            window = [d for d in storage.dates("events") if first <= d <= day]
            tracking.log_partition_inputs(storage, "events", window)

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

        written = storage.write("gem_embeddings", day, _embedding_table(items.ids, vectors),
                                metadata={"mlflow_run_id": run.info.run_id, "objective": cfg.objective,
                                          "out_dim": cfg.out_dim})
        figure = _plot(losses, metrics, cfg.eval_k, cfg.objective)
        mlflow.log_figure(figure, "gem_training.png")
        _close_figure(figure)
        mlflow.log_dict({"losses": losses, **metrics, **counts}, "gem_summary.json")
        mlflow.pytorch.log_model(encoder, name="model", input_example=items.content[:2],
                                 pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])

    return {"dt": day.isoformat(), "objective": cfg.objective, "rows": written.rows, "uri": written.uri,
            "out_dim": cfg.out_dim, "losses": [round(v, 5) for v in losses], **counts,
            **{k: round(v, 4) for k, v in metrics.items()},
            "mlflow_run_id": run.info.run_id, "mlflow_experiment_id": run.info.experiment_id}
