"""One typed settings object for every pipeline step.

Values come from defaults, then an optional YAML file (``RECSYS_CONFIG`` or an explicit
path), then environment overrides ``RECSYS__SECTION__KEY=value``. Unknown keys and
out-of-range values are rejected so a typo in ops config fails loudly instead of being ignored.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class InteractionWeights(_Strict):
    """Weight of a user-item interaction by the kinds of engagement it had."""

    view: float = Field(1.0, gt=0)
    full_watch: float = Field(1.2, gt=0)
    like: float = Field(1.5, gt=0)
    share: float = Field(2.0, gt=0)
    any_two: float = Field(2.5, gt=0)
    all_three: float = Field(3.0, gt=0)
    full_watch_completion: float = Field(0.8, gt=0, le=1.5)


class EmbeddingSettings(_Strict):
    dim: int = Field(128, gt=0)
    trimmed_dim: int = Field(16, gt=0)
    source: Literal["content", "gem"] = "content"


class PairMiningSettings(_Strict):
    window_days: int = Field(7, ge=1, le=90)
    positive_completion: float = Field(0.9, ge=0)
    negative_watch_s: float = Field(5.0, ge=0)
    negative_completion: float = Field(0.3, ge=0)
    max_positive_share: float = Field(0.9, gt=0, le=1)
    min_clients: int = Field(2, ge=1)
    max_positives_per_client: int = Field(200, ge=2)
    sample_seed: int = 0
    max_unknown_item_share: float = Field(0.05, ge=0, le=1)
    similarity_edges: list[float] = Field(default_factory=lambda: [-1.0, 0.2, 0.5, 0.8, 1.0001])
    engine: Literal["duckdb", "spark"] = "duckdb"
    spark_master: str = "local[*]"
    spark_remote: str | None = None  # Spark Connect URL (sc://host:15002); wins over spark_master
    spark_conf: dict[str, str] = Field(default_factory=dict)
    duckdb_memory_limit: str | None = None  # e.g. "8GB"; DuckDB spills to a temp dir beyond it
    duckdb_threads: int | None = Field(None, ge=1)

    @field_validator("similarity_edges")
    @classmethod
    def _increasing(cls, v: list[float]) -> list[float]:
        if len(v) < 2 or any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError("similarity_edges must be at least two strictly increasing values")
        return v


class UserMedoidSettings(_Strict):
    window_days: int = Field(14, ge=1, le=90)
    max_medoids: int = Field(12, ge=1)
    min_interactions: int = Field(3, ge=1)
    algorithm: Literal["dbscan", "hdbscan", "pinnersage"] = "dbscan"
    eps: float = Field(0.15, gt=0)
    min_samples: int = Field(2, ge=1)
    hdbscan_min_cluster_size: int = Field(3, ge=2)
    decay_lambda: float = Field(0.1, ge=0)
    shards: int = Field(4, ge=1, le=1024)
    seed: int = 0


CRON_PRESETS = frozenset({"@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly"})


class GlobalMedoidSettings(_Strict):
    k: int = Field(500, ge=2)
    schedule: str = "@weekly"
    niter: int = Field(20, ge=1)
    seed: int = 0
    silhouette_sample: int = Field(5000, ge=10)
    match_max_distance: float = Field(0.5, gt=0, le=2)  # cosine distance above which a cluster gets a new id
    templates_path: str = "configs/templates.yaml"
    template_keywords: int = Field(3, ge=1)
    template_variants: int = Field(3, ge=1, le=3)

    @field_validator("schedule")
    @classmethod
    def _time_based(cls, v: str) -> str:
        from croniter import croniter  # Airflow's own cron parser (a dependency of apache-airflow-core)

        v = v.strip()
        if v.lower() in {"none", "", "@once", "@continuous"}:
            raise ValueError("global_medoids.schedule must be time-based (a preset or cron) so backfills work")
        if v not in CRON_PRESETS and not croniter.is_valid(v):
            raise ValueError(f"global_medoids.schedule {v!r} is not a cron expression or one of {sorted(CRON_PRESETS)}")
        return v


class NotificationSettings(_Strict):
    k_neighbours: int = Field(10, ge=1)
    history_days: int = Field(14, ge=1)
    sent_lookback_days: int = Field(30, ge=1)
    min_candidates: int = Field(3, ge=1)
    max_per_user_days: int = Field(1, ge=1)
    frequency_cap: int = Field(1, ge=1)
    holdout_percent: float = Field(5.0, ge=0, le=100)
    short_term_weight: float = Field(0.3, ge=0)
    short_term_enabled: bool = True
    no_medoid_policy: Literal["popular", "none"] = "popular"
    seed: int = 0
    # candidate generation and fallbacks
    items_per_cluster: int = Field(4, ge=1)
    candidates_per_seed: int = Field(8, ge=1)
    more_neighbours: int = Field(30, ge=1)
    popular_k: int = Field(50, ge=1)
    popularity_days: int = Field(7, ge=1)
    cold_start_days: int = Field(2, ge=1)
    cold_start_k: int = Field(5, ge=1)
    short_term_items: int = Field(3, ge=1)
    positive_completion: float = Field(0.9, ge=0)
    unengaged_lookback_days: int = Field(90, ge=1)
    # transparent ranking: affinity x log(2 + popularity) x (1 + boost * exp(-age_days / freshness_days))
    freshness_days: float = Field(3.0, gt=0)
    freshness_boost: float = Field(1.0, ge=0)
    use_champion: bool = True
    shard_users: int = Field(100_000, ge=1)
    thumbnail_uri: str = "s3://recsys-media/thumbnails/{item_id}.jpg"
    experiment: str = "notifications"


class TwoTowerSettings(_Strict):
    experiment: str = "two_tower"
    registered_model: str = "two_tower"
    primary_metric: str = "ndcg_10"
    guard_metrics: list[str] = Field(default_factory=lambda: ["auc"])
    guard_tolerance: float = Field(0.01, ge=0)
    configs_dir: str = "configs/two_tower"


class GemSettings(_Strict):
    """Generic embedding model: content embedding -> collaborative space (see docs/gem.md)."""

    objective: Literal["pairs", "als"] = "pairs"
    out_dim: int = Field(128, gt=0)
    epochs: int = Field(20, ge=1)
    seed: int = 0
    experiment: str = "gem"
    schedule: str = "@daily"
    hidden_dim: int = Field(256, gt=0)
    batch_size: int = Field(512, ge=8)
    learning_rate: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    temperature: float = Field(0.05, gt=0, le=1)
    negative_weight: float = Field(0.5, ge=0)
    bucket_balance: float = Field(0.25, ge=0, le=1)
    holdout_fraction: float = Field(0.1, gt=0, lt=1)
    eval_k: int = Field(20, ge=1)
    max_eval_items: int = Field(2000, ge=1)
    window_days: int = Field(14, ge=1, le=90)
    als_factors: int = Field(128, ge=2)
    als_iterations: int = Field(15, ge=1)
    als_regularization: float = Field(1.0, ge=0)
    als_min_users: int = Field(2, ge=1)
    num_threads: int = Field(0, ge=0)  # torch/ALS threads; 0 keeps the process default

    @field_validator("schedule")
    @classmethod
    def _time_based(cls, v: str) -> str:
        if v.strip().lower() in {"none", "", "@once", "@continuous"}:
            raise ValueError("gem.schedule must be time-based (a preset or cron) so backfills work")
        return v


class Settings(_Strict):
    data_root: str = "file://./data"
    # fsspec options for the data root, e.g. {"client_kwargs": {"endpoint_url": "http://minio:9000"}} for S3
    storage_options: dict[str, Any] = Field(default_factory=dict)
    mlflow_tracking_uri: str | None = None
    mlflow_artifact_root: str | None = None
    mlflow_ui_url: str = "http://127.0.0.1:5000"  # where people open MLflow (Airflow "MLflow run" links)
    seed: int = 0
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    interaction_weights: InteractionWeights = Field(default_factory=InteractionWeights)
    pair_mining: PairMiningSettings = Field(default_factory=PairMiningSettings)
    user_medoids: UserMedoidSettings = Field(default_factory=UserMedoidSettings)
    global_medoids: GlobalMedoidSettings = Field(default_factory=GlobalMedoidSettings)
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)
    two_tower: TwoTowerSettings = Field(default_factory=TwoTowerSettings)
    gem: GemSettings = Field(default_factory=GemSettings)

    @field_validator("data_root")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        if "://" in v and not v.startswith(("file://", "s3://", "memory://")):
            raise ValueError(f"data_root scheme not supported: {v!r} (use file:// or s3://)")
        return v

    @property
    def tracking_uri(self) -> str:
        """MLflow store: explicit URI, else SQLite beside the data (local roots only)."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        if self.data_root.startswith("s3://"):
            raise ValueError("mlflow_tracking_uri must be set when data_root is on S3")
        return f"sqlite:///{self.local_root() / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str:
        if self.mlflow_artifact_root:
            return self.mlflow_artifact_root
        if self.data_root.startswith("s3://"):
            return self.data_root.rstrip("/") + "/mlartifacts"
        return (self.local_root() / "mlartifacts").as_uri()

    def local_root(self) -> Path:
        return Path(self.data_root.removeprefix("file://")).resolve()


ENV_PREFIX = "RECSYS__"


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """Turn ``RECSYS__A__B=v`` into ``{"a": {"b": v}}``; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        path = key[len(ENV_PREFIX):].lower().split("__")
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _scalar(raw)
    return out


def _scalar(raw: str) -> Any:
    """YAML scalar (numbers, booleans, lists) where it parses, else the raw text (``@daily``, ``*/5 * * * *``)."""
    if raw == "":
        return raw
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class ConfigError(ValueError):
    """Config file or environment override is invalid."""


def load_settings(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Build settings from YAML (explicit path or ``RECSYS_CONFIG``) plus env overrides."""
    environ = dict(os.environ if environ is None else environ)
    path = path or environ.get("RECSYS_CONFIG")
    data: dict[str, Any] = {}
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must contain a mapping, got {type(loaded).__name__}")
        data = loaded
    data = _merge(data, _env_overrides(environ))
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid config{f' {path}' if path else ''}: {_problems(exc)}") from None


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())


def with_overrides(settings: Settings, section: str, **values: Any) -> Settings:
    """Copy of ``settings`` with ``values`` (``None`` = keep configured) set in ``section``, validated.

    For DAG params and CLI flags that override one run's config.
    """
    values = {k: v for k, v in values.items() if v is not None}
    if not values:
        return settings
    data = settings.model_dump()
    data[section] = {**data[section], **values}
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid override: {_problems(exc)}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings (cached); tests call ``get_settings.cache_clear()`` after changing env."""
    return load_settings()
