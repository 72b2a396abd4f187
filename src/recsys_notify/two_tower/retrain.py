"""The retrain step: train experiments as MLflow runs, register them, gate each against the champion."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from datetime import date
from typing import Any

import pandas as pd

from recsys_notify.config import Settings
from recsys_notify.storage import Storage, as_date
from recsys_notify.two_tower.config import available_experiments, load_experiment
from recsys_notify.two_tower.data import load_window, prepare
from recsys_notify.two_tower.registry import gate
from recsys_notify.two_tower.train import TrainResult, fit

log = logging.getLogger(__name__)
COMPARE_COLUMNS = {"auc": "AUC", "ndcg_5": "NDCG@5", "ndcg_10": "NDCG@10", "mrr": "MRR", "map": "MAP",
                   "cust_map_10": "CUST-MAP@10", "coverage_10": "coverage"}


def train_experiment(storage: Storage, dt: date | str, settings: Settings, name: str,
                     overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Train one experiment validated on ``dt`` as an MLflow run and register its model (no gating)."""
    import mlflow
    import mlflow.pytorch

    from recsys_notify.tracking import log_partition_inputs, tracked_run

    dt = as_date(dt)
    tt = settings.two_tower
    cfg = load_experiment(name, tt.configs_dir, overrides)
    inter = load_window(storage, dt, cfg)
    prep = prepare(inter, cfg, settings.interaction_weights)
    params = {**cfg.params(), **{f"data_{k}": v for k, v in {**inter.info, **prep.counts}.items()}}
    with tracked_run(tt.experiment, f"{name} {dt}", params=params,
                     tags={"experiment": name, "dt": dt.isoformat(), "step": "two_tower_retrain"},
                     settings=settings) as run:
        log_partition_inputs(storage, "events", inter.lineage["events"][:-1], context="training")
        log_partition_inputs(storage, "events", dt, context="validation")
        for dataset, days in inter.lineage.items():
            if dataset != "events":
                log_partition_inputs(storage, dataset, days, context="features")
        # per-epoch curves get an ``epoch_`` prefix so the final (best-epoch) metrics are the runs' values
        result = fit(prep, primary=tt.primary_metric, on_epoch=lambda epoch, m: mlflow.log_metrics(
            {f"epoch_{k}": v for k, v in _finite(m).items()}, step=epoch))
        mlflow.log_metrics(_finite(result.metrics))
        mlflow.log_figure(_curve(result, name), "training_curve.png")
        info = mlflow.pytorch.log_model(result.model, name="model", pip_requirements=["torch==2.13.0"],
                                        serialization_format="pickle")
        version = _register(info.model_uri, tt.registered_model)
        mlflow.set_tag("registered_version", version)
    return {"experiment": name, "mlflow_run_id": run.info.run_id, "mlflow_experiment_id": run.info.experiment_id,
            "version": version, "best_epoch": result.best_epoch,
            "metrics": {k: result.metrics.get(k) for k in COMPARE_COLUMNS}}


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


def retrain(storage: Storage, dt: date | str, settings: Settings, experiments: list[str] | None = None,
            overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Train the given experiments (default: all configs), then gate each new version in order."""
    dt = as_date(dt)
    known = available_experiments(settings.two_tower.configs_dir)
    names = list(experiments or known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown two-tower experiment(s) {', '.join(unknown)} (known: {', '.join(known)})")
    for name in names:  # validate every config (and override) before training anything
        load_experiment(name, settings.two_tower.configs_dir, overrides)
    trained = [train_experiment(storage, dt, settings, n, overrides) for n in names]
    gates = [gate(storage, dt, settings, t["version"]) for t in trained]
    for t, g in zip(trained, gates):
        t["gate"] = g
    last = trained[-1]
    return {"dt": dt.isoformat(), "experiments": trained,
            "champion_version": gates[-1]["champion_version"],
            "mlflow_run_id": last["mlflow_run_id"], "mlflow_experiment_id": last["mlflow_experiment_id"]}


def compare_table(settings: Settings, dt: date | str | None = None) -> pd.DataFrame:
    """Tracker-style table: the newest run of each experiment (optionally of one validation day)."""
    import mlflow

    from recsys_notify.tracking import configure

    configure(settings)
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


def _curve(result: TrainResult, name: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = pd.DataFrame(result.history)
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    ax[0].plot(hist["epoch"], hist["train_loss"], marker="o")
    ax[0].set(title="train loss", xlabel="epoch")
    for key in ("auc", "ndcg_10", "mrr"):
        if key in hist:
            ax[1].plot(hist["epoch"], hist[key], marker="o", label=key)
    ax[1].axvline(result.best_epoch, color="grey", linestyle="--", label="best epoch")
    ax[1].set(title="validation", xlabel="epoch")
    ax[1].legend()
    fig.suptitle(name)
    fig.tight_layout()
    plt.close(fig)
    return fig
