"""The two_tower step: train experiments as MLflow runs, register them, gate each against the champion.

Parts are experiment names (``two_tower.experiments``, every config validated before anything
trains): :func:`run_part` trains and registers one (no promotion), :func:`finish` gates each new
version against the champion in order, :func:`run` does both in one process (the CLI).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from datetime import date
from typing import Any

import pandas as pd

from recsys_notify.core import tracking
from recsys_notify.core.config import ConfigError, Settings
from recsys_notify.core.inputs import resolve
from recsys_notify.core.step import StepResult, parse_params
from recsys_notify.core.storage import Storage, as_date
from recsys_notify.two_tower.config import (
    ExperimentConfig,
    available_experiments,
    identical_groups,
    load_experiment,
)
from recsys_notify.two_tower.data import interactions_from, prepare, train_requests
from recsys_notify.two_tower.registry import gate
from recsys_notify.two_tower.train import TrainResult, fit

NAME = "two_tower"
log = logging.getLogger(__name__)
COMPARE_COLUMNS = {"auc": "AUC", "ndcg_5": "NDCG@5", "ndcg_10": "NDCG@10", "mrr": "MRR", "map": "MAP",
                   "cust_map_10": "CUST-MAP@10", "coverage_10": "coverage", "full_ndcg_10": "full NDCG@10",
                   "recall_10": "Recall@10"}


def _settings(settings: Settings, params: dict[str, Any] | None) -> Settings:
    return parse_params(settings, NAME, params)[0]


def experiment(settings: Settings, name: str) -> ExperimentConfig:
    """The config of ``name`` with the run's overrides (an invalid override is a config error naming it)."""
    tt = settings.two_tower
    try:
        return load_experiment(name, tt.configs_dir, tt.experiment_overrides)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def parts(storage: Storage, settings: Settings, dt: date, params: dict[str, Any] | None = None) -> list[str]:
    """The experiments to train, each config validated before anything trains."""
    settings = _settings(settings, params)
    known = available_experiments(settings.two_tower.configs_dir)
    names = list(settings.two_tower.experiments)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown two-tower experiment(s) {', '.join(unknown)} (known: {', '.join(known)})")
    configs = [experiment(settings, name) for name in names]
    for group in identical_groups(configs):
        log.warning("two-tower experiments %s train the same model with these settings (they differ only in "
                    "name/description): their metrics will be identical", ", ".join(group))
    return names


def run_part(storage: Storage, settings: Settings, dt: date, params: dict[str, Any] | None, name: str
             ) -> dict[str, Any]:
    """Train one experiment validated on ``dt`` as an MLflow run and register its model (no gating)."""
    import mlflow
    import mlflow.pytorch

    settings = _settings(settings, params)
    tt = settings.two_tower
    cfg = experiment(settings, name)
    inputs = resolve(storage, train_requests(cfg, dt))
    inter = interactions_from(inputs, cfg)
    prep = prepare(inter, cfg, settings.interaction_weights)
    run_params = {**cfg.params(), **{f"data_{k}": v for k, v in {**inter.info, **prep.counts}.items()}}
    with tracking.tracked_run(tt.experiment, f"{name} {dt}", params=run_params,
                              tags={"experiment": name, "dt": dt.isoformat(), "step": NAME},
                              settings=settings) as run:
        tracking.log_lineage(inputs)
        # per-epoch curves get an ``epoch_`` prefix so the final (best-epoch) metrics are the runs' values
        result = fit(prep, primary=tt.primary_metric, on_epoch=lambda epoch, m: mlflow.log_metrics(
            {f"epoch_{k}": v for k, v in _finite(m).items()}, step=epoch))
        mlflow.log_metrics(_finite(result.metrics))
        _curve(result, name)
        info = mlflow.pytorch.log_model(result.model, name="model", pip_requirements=["torch==2.13.0"],
                                        serialization_format="pickle")
        version = _register(info.model_uri, tt.registered_model)
        mlflow.set_tag("registered_version", version)
    return {"experiment": name, **tracking.run_ids(run), "version": version, "best_epoch": result.best_epoch,
            "metrics": {k: result.metrics.get(k) for k in COMPARE_COLUMNS}, "inputs": inputs.summary()}


def _register(model_uri: str, name: str) -> str:
    """``mlflow.register_model``, its progress prints ("Created version ...") logged as info: printed to
    stderr they would show as ERROR lines in the task log."""
    import contextlib
    import io

    import mlflow

    printed = io.StringIO()
    with contextlib.redirect_stderr(printed):
        version = mlflow.register_model(model_uri, name).version
    for line in filter(None, printed.getvalue().splitlines()):
        log.info("%s", line)
    return str(version)


def finish(storage: Storage, settings: Settings, dt: date, params: dict[str, Any] | None,
           part_results: list[dict[str, Any]]) -> StepResult:
    """Gate each newly registered version against the champion, in the order trained."""
    settings = _settings(settings, params)
    if not part_results:
        raise ValueError("two_tower finish needs the trained experiments (run its parts first)")
    gates = [gate(storage, dt, settings, t["version"]) for t in part_results]
    best = max(part_results, key=lambda t: t["metrics"].get(settings.two_tower.primary_metric) or float("-inf"))
    summary = {"experiments": [{**{k: t[k] for k in ("experiment", "version", "best_epoch", "metrics",
                                                    "mlflow_run_id")}, "gate": g}
                               for t, g in zip(part_results, gates)],
               "champion_version": gates[-1]["champion_version"], "best_experiment": best["experiment"],
               "identical_experiments": identical_groups([experiment(settings, t["experiment"])
                                                         for t in part_results])}
    return StepResult(NAME, dt, {}, summary, part_results[0]["inputs"], best["mlflow_run_id"],
                      best["mlflow_experiment_id"])


def run(storage: Storage, settings: Settings, dt: date, params: dict[str, Any] | None = None) -> StepResult:
    """Train every configured experiment, then gate each new version in order."""
    trained = [run_part(storage, settings, dt, params, name) for name in parts(storage, settings, dt, params)]
    return finish(storage, settings, dt, params, trained)


def compare_table(settings: Settings, dt: date | str | None = None) -> pd.DataFrame:
    """Tracker-style table: the newest run of each experiment (optionally of one validation day)."""
    import mlflow

    tracking.configure(settings)
    exp = mlflow.get_experiment_by_name(settings.two_tower.experiment)
    if exp is None:
        return pd.DataFrame(columns=["experiment", *COMPARE_COLUMNS.values()])
    query = f"tags.dt = '{as_date(dt).isoformat()}'" if dt else ""
    runs = mlflow.search_runs([exp.experiment_id], filter_string=query, order_by=["start_time DESC"])
    if runs.empty:
        return pd.DataFrame(columns=["experiment", *COMPARE_COLUMNS.values()])
    runs = runs[runs["status"] == "FINISHED"].drop_duplicates("tags.experiment")
    table = pd.DataFrame({"experiment": runs["tags.experiment"]})
    for key, title in COMPARE_COLUMNS.items():
        table[title] = runs.get(f"metrics.{key}")
    table["run_id"] = runs["run_id"]
    return table.sort_values("NDCG@10", ascending=False).reset_index(drop=True)


def format_table(table: pd.DataFrame) -> str:
    return table.drop(columns=["run_id"], errors="ignore").to_string(index=False, float_format=lambda v: f"{v:.4f}")


def _finite(metrics: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def _curve(result: TrainResult, name: str) -> None:
    hist = pd.DataFrame(result.history)
    with tracking.logged_figure("training_curve.png", 1, 2, figsize=(9, 3.5)) as (fig, ax):
        ax[0].plot(hist["epoch"], hist["train_loss"], marker="o")
        ax[0].set(title="train loss", xlabel="epoch")
        for key in ("auc", "ndcg_10", "mrr"):
            if key in hist:
                ax[1].plot(hist["epoch"], hist[key], marker="o", label=key)
        ax[1].axvline(result.best_epoch, color="grey", linestyle="--", label="best epoch")
        ax[1].set(title="validation", xlabel="epoch")
        ax[1].legend()
        fig.suptitle(name)
