"""MLflow helpers: one place that points MLflow at the configured store and logs lineage.

The default store is SQLite under the data root with artifacts beside it; docker-compose sets
``RECSYS__MLFLOW_TRACKING_URI`` to its MLflow server instead.
"""

from __future__ import annotations

import sqlite3
import warnings
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from recsys_notify.core.config import Settings, get_settings
from recsys_notify.core.inputs import Inputs


class TrackingUnavailableError(RuntimeError):
    """The MLflow tracking store cannot be reached; produced data is kept and the run can be retried."""


def configure(settings: Settings | None = None) -> str:
    """Point MLflow at the configured tracking store and return its URI."""
    import mlflow

    settings = settings or get_settings()
    uri = settings.tracking_uri
    if uri.startswith("sqlite:///"):
        settings.local_root().mkdir(parents=True, exist_ok=True)
        _migrate_once(uri)  # first: another process may be creating the store's tables right now
        if not (settings.mlflow_tracking_uri or settings.mlflow_artifact_root):
            relocate_artifacts(settings.local_root() / "mlflow.db", settings.artifact_root)
    mlflow.set_tracking_uri(uri)
    return uri


_MIGRATED: set[str] = set()


def _migrate_once(uri: str) -> None:
    """Create or upgrade a SQLite store under a file lock: processes first using one store at once
    otherwise race in MLflow's schema migration ("table already exists")."""
    if uri in _MIGRATED:
        return
    import fcntl

    from mlflow.tracking import MlflowClient

    with open(f"{uri.removeprefix('sqlite:///')}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file closes
        MlflowClient(uri).search_experiments(max_results=1)  # opening the store runs the migration
    _MIGRATED.add(uri)


# Rewrites of the columns where MLflow 3's SQL store keeps absolute artifact locations:
# (new root, len(old root) + 1, len(old root), old root).
RELOCATE_SQL = (
    "UPDATE experiments SET artifact_location = ? || substr(artifact_location, ?)"
    " WHERE substr(artifact_location, 1, ?) = ?",
    "UPDATE runs SET artifact_uri = ? || substr(artifact_uri, ?) WHERE substr(artifact_uri, 1, ?) = ?",
    "UPDATE logged_models SET artifact_location = ? || substr(artifact_location, ?)"
    " WHERE substr(artifact_location, 1, ?) = ?",
    "UPDATE model_versions SET storage_location = ? || substr(storage_location, ?)"
    " WHERE substr(storage_location, 1, ?) = ?",
    "UPDATE model_versions SET source = ? || substr(source, ?) WHERE substr(source, 1, ?) = ?",
)


def relocate_artifacts(db: Path, artifact_root: str) -> int:
    """Point a default store moved or copied with its data root at the artifacts beside it; returns rows changed.

    MLflow records absolute ``file://`` artifact locations, so without this a copied data root would keep
    writing artifacts into the original one.
    """
    if not db.exists():
        return 0
    root = artifact_root.rstrip("/")
    marker = f"/{Path(root).name}/"
    with closing(sqlite3.connect(db, timeout=60)) as conn, conn:
        old = {loc.split(marker, 1)[0] + marker.rstrip("/") for (loc,) in conn.execute(
            "SELECT artifact_location FROM experiments WHERE artifact_location LIKE ?", (f"file://%{marker}%",))}
        old.discard(root)
        changed = 0
        for prefix in old:
            for statement in RELOCATE_SQL:
                try:
                    changed += conn.execute(statement, (root, len(prefix) + 1, len(prefix), prefix)).rowcount
                except sqlite3.OperationalError as exc:
                    if "no such" not in str(exc):  # a table or column an older MLflow did not have
                        raise
    return changed


def ensure_experiment(name: str, settings: Settings | None = None) -> str:
    """Create the experiment (artifacts under the configured root) if needed; return its id."""
    import mlflow

    settings = settings or get_settings()
    configure(settings)
    try:
        exp = mlflow.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        return mlflow.create_experiment(name, artifact_location=f"{settings.artifact_root.rstrip('/')}/{name}")
    except Exception as exc:  # mlflow raises several transport-specific types
        raise TrackingUnavailableError(
            f"MLflow tracking store {settings.tracking_uri} is unavailable: {exc}. "
            "Outputs already written are kept; retry the task once the store is back."
        ) from exc


@contextmanager
def tracked_run(experiment: str, run_name: str, params: dict[str, Any] | None = None,
                tags: dict[str, str] | None = None, settings: Settings | None = None) -> Iterator[Any]:
    """Start an MLflow run in ``experiment`` with params and tags; yields the active run."""
    import mlflow

    exp_id = ensure_experiment(experiment, settings)
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=tags or {}) as run:
        if params:
            mlflow.log_params({k: _param(v) for k, v in params.items()})
        yield run


def _param(value: Any) -> Any:
    text = value if isinstance(value, (int, float, bool)) else str(value)
    return text[:6000] if isinstance(text, str) else text


def log_lineage(inputs: Inputs) -> None:
    """Record every partition the run read (``mlflow.log_input``, context = its role) and the list as JSON."""
    log_records(inputs.lineage())


def log_records(records: list[dict[str, Any]]) -> None:
    """:func:`log_lineage` of :meth:`Inputs.lineage` records (e.g. collected from a step's shards)."""
    import mlflow
    import pandas as pd

    from recsys_notify.core.datasets import lookup

    datasets = []
    for rec in records:
        columns = lookup(rec["dataset"]).columns
        with warnings.catch_warnings():  # MLflow registers its local artifact source twice and warns on every path
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
            datasets.append(mlflow.data.from_pandas(pd.DataFrame({c: [] for c in columns}), source=rec["uri"],
                                                    name=f"{rec['dataset']}/dt={rec['dt'].replace('-', '')}",
                                                    digest=str(rec["version"] or rec["rows"])[:36]))
    if datasets:  # one store transaction for every input, not one each
        mlflow.log_inputs(datasets, contexts=[rec["role"] for rec in records], tags_list=[None] * len(records))
    mlflow.log_dict({"inputs": records}, "inputs.json")


def run_ids(run: Any) -> dict[str, str]:
    """The run reference a step result carries (the Airflow "MLflow run" link reads it)."""
    return {"mlflow_run_id": run.info.run_id, "mlflow_experiment_id": run.info.experiment_id}


@contextmanager
def logged_figure(artifact: str, nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (7, 4)
                  ) -> Iterator[tuple[Any, Any]]:
    """``(figure, axes)`` to draw on; logged to the active run as ``artifact`` and closed afterwards."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    fig, axes = plt.subplots(nrows, ncols, figsize=figsize)
    try:
        yield fig, axes
        fig.tight_layout()
        mlflow.log_figure(fig, artifact)
    finally:
        plt.close(fig)
