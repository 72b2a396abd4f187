"""One typed settings object for every pipeline step.

Values come from defaults, then an optional YAML file (``RECSYS_CONFIG`` or an explicit
path), then environment overrides ``RECSYS__SECTION__KEY=value``. Unknown keys and
out-of-range values are rejected so a typo in ops config fails loudly instead of being ignored.
"""

from __future__ import annotations

import os
import string
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class _Strict(BaseModel):
    # field docstrings become descriptions: the Airflow trigger form and CLI --help show them
    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)


def _time_based(section: str, v: str) -> str:
    """A cron expression or preset (backfills need a time-based schedule)."""
    from croniter import croniter  # Airflow's own cron parser (a dependency of apache-airflow-core)

    v = v.strip()
    if v.lower() in {"none", "", "@once", "@continuous"}:
        raise ValueError(f"{section}.schedule must be time-based (a preset or cron) so backfills work")
    if v not in CRON_PRESETS and not croniter.is_valid(v):
        raise ValueError(f"{section}.schedule {v!r} is not a cron expression or one of {sorted(CRON_PRESETS)}")
    return v


CRON_PRESETS = frozenset({"@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly"})


class InteractionWeights(_Strict):
    """Weight of a user-item interaction by the kinds of engagement it had."""

    view: float = Field(1.0, gt=0)
    """weight of a plain view (no full watch, like or share)"""
    full_watch: float = Field(1.2, gt=0)
    """weight of a full watch alone"""
    like: float = Field(1.5, gt=0)
    """weight of a like alone"""
    share: float = Field(2.0, gt=0)
    """weight of a share alone"""
    any_two: float = Field(2.5, gt=0)
    """weight of any two of full watch, like, share"""
    all_three: float = Field(3.0, gt=0)
    """weight of full watch, like and share together"""
    full_watch_completion: float = Field(0.8, gt=0, le=1.5)
    """completion above which a watch counts as full"""


class EmbeddingSettings(_Strict):
    trimmed_dim: int = Field(16, gt=0, le=1024)
    """leading (highest-variance) values of each item vector used for clustering and retrieval"""
    source: Literal["content", "gem"] = "content"
    """item vectors: the items' content embedding, or the GEM model's output"""


class PairMiningSettings(_Strict):
    window_days: int = Field(7, ge=1, le=90)
    """days of events ending at the run date"""
    positive_completion: float = Field(0.9, ge=0, le=1.5)
    """positive if completion is above this (or liked)"""
    negative_watch_s: float = Field(5.0, ge=0)
    """negative if total watch time (s) is below this"""
    negative_completion: float = Field(0.3, ge=0, le=1.5)
    """negative if completion is below this"""
    max_positive_share: float = Field(0.9, gt=0, le=1)
    """drop clients whose Pos / (Pos + Neg) is above this"""
    min_clients: int = Field(2, ge=1)
    """keep pairs seen by at least this many distinct clients"""
    max_positives_per_client: int = Field(200, ge=2)
    """cap on a client's positives (deterministic sample)"""
    sample_seed: int = Field(0, ge=0)
    """seed of the per-client positive sample"""
    max_unknown_item_share: float = Field(0.05, ge=0, le=1)
    """fail when more than this share of interacted items is not in items"""
    similarity_edges: list[float] = Field(default_factory=lambda: [-1.0, 0.2, 0.5, 0.8, 1.0001])
    """content-similarity bucket edges (strictly increasing)"""
    engine: Literal["duckdb", "spark"] = "duckdb"
    """SQL engine (spark uses spark_master / spark_remote)"""
    spark_master: str = "local[*]"
    """Spark master URL when engine is spark"""
    spark_remote: str | None = None
    """Spark Connect URL (sc://host:15002); wins over spark_master"""
    spark_conf: dict[str, str] = Field(default_factory=dict)
    """extra Spark configuration"""
    duckdb_memory_limit: str | None = None
    """e.g. 8GB; DuckDB spills to a temp dir beyond it"""
    duckdb_threads: int | None = Field(None, ge=1)
    """DuckDB threads (empty: all cores)"""

    @field_validator("similarity_edges")
    @classmethod
    def _increasing(cls, v: list[float]) -> list[float]:
        if len(v) < 2 or any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError("similarity_edges must be at least two strictly increasing values")
        return v


class UserMedoidSettings(_Strict):
    window_days: int = Field(14, ge=1, le=90)
    """days of interactions per user"""
    max_medoids: int = Field(12, ge=1, le=1000)
    """medoids per user at most"""
    min_interactions: int = Field(3, ge=1)
    """users with fewer interactions get no medoids"""
    algorithm: Literal["dbscan", "hdbscan", "pinnersage"] = "dbscan"
    """clustering/selection mode"""
    eps: float = Field(0.15, gt=0, le=2)
    """DBSCAN neighbourhood radius (cosine distance)"""
    min_samples: int = Field(2, ge=1)
    """DBSCAN/HDBSCAN core-point neighbours"""
    hdbscan_min_cluster_size: int = Field(3, ge=2)
    """HDBSCAN smallest cluster"""
    decay_lambda: float = Field(0.1, ge=0)
    """daily decay of interaction weight when ranking clusters"""
    shards: int = Field(4, ge=1, le=1024)
    """user-hash shards (one mapped task each); divisors and multiples of event_buckets read only their rows"""
    seed: int = Field(0, ge=0)
    """sampling seed"""
    engine: Literal["embedded", "spark"] = "embedded"
    """embedded: shards in this process / mapped tasks; spark: one Spark job over the user buckets"""
    spark_master: str = "local[*]"
    """Spark master URL when engine is spark"""
    spark_remote: str | None = None
    """Spark Connect URL (sc://host:15002); wins over spark_master"""
    spark_conf: dict[str, str] = Field(default_factory=dict)
    """extra Spark configuration"""


class GlobalMedoidSettings(_Strict):
    k: int = Field(500, ge=2)
    """KMeans clusters (capped by the number of items)"""
    schedule: str = "@weekly"
    """refresh schedule (cron or preset)"""
    niter: int = Field(20, ge=1, le=1000)
    """KMeans iterations"""
    seed: int = Field(0, ge=0)
    """KMeans seed"""
    silhouette_sample: int = Field(5000, ge=10)
    """items sampled for the silhouette metric"""
    match_max_distance: float = Field(0.5, gt=0, le=2)
    """cosine distance above which a cluster gets a new id"""
    templates_path: str = "configs/templates.yaml"
    """ops notification templates (YAML)"""
    phrases_path: str = "configs/phrases.yaml"
    """per-language wording of automatic notification text (YAML; notifications read it too)"""
    template_keywords: int = Field(3, ge=1, le=20)
    """keywords per automatic template"""
    template_variants: int = Field(3, ge=1, le=3)
    """automatic template variants per cluster"""
    max_input_age_days: int = Field(7, ge=0, le=3650)
    """fail when the newest user medoids are older than this many days (a stale refresh)"""
    trigger: Literal["schedule", "drift"] = "schedule"
    """schedule: refresh on every run; drift: refresh only when user medoids drifted past a threshold"""
    drift_max_uncovered: float = Field(0.01, ge=0, le=1)
    """drift trigger: refresh when the share of user-medoid items beyond match_max_distance grew more than this"""
    drift_max_churn: float = Field(0.3, ge=0, le=1)
    """drift trigger: refresh above this mean share of users' medoid importance that moved between clusters"""

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        return _time_based("global_medoids", v)


class NotificationSettings(_Strict):
    k_neighbours: int = Field(10, ge=1)
    """global clusters retrieved per seed item"""
    history_days: int = Field(14, ge=1)
    """days of history: items watched in them are not sent"""
    sent_lookback_days: int = Field(30, ge=1)
    """an item sent to a user within this many days is not sent again"""
    min_candidates: int = Field(3, ge=1)
    """below this many candidates a user gets fallback sources"""
    max_per_user_days: int = Field(1, ge=1)
    """frequency-cap window in days"""
    frequency_cap: int = Field(1, ge=1)
    """notifications per user within the frequency-cap window"""
    holdout_percent: float = Field(5.0, ge=0, le=100)
    """percent of users held out (recorded, not notified)"""
    short_term_weight: float = Field(0.3, ge=0)
    """seed weight of the run date's positive items"""
    short_term_enabled: bool = True
    """add the run date's positive items as seeds"""
    no_medoid_policy: Literal["popular", "none"] = "popular"
    """users without medoids get a popular item or nothing"""
    seed: int = Field(0, ge=0)
    """holdout and template-variant seed"""
    items_per_cluster: int = Field(4, ge=1)
    """items considered per retrieved cluster and language"""
    candidates_per_seed: int = Field(8, ge=1)
    """candidates kept per seed item"""
    more_neighbours: int = Field(30, ge=1)
    """fallback: clusters retrieved beyond k_neighbours"""
    popular_k: int = Field(50, ge=1)
    """popular items per language in the fallback index"""
    creator_affinity: bool = False
    """a user's dominant creator's items become candidates and rank x (1 + creator_boost)"""
    creator_boost: float = Field(0.5, ge=0)
    """ranking gain of the dominant creator's items when creator_affinity is on"""
    creator_min_share: float = Field(0.3, gt=0, le=1)
    """share of a user's positives of the last popularity_days from one creator that makes it dominant (3 at least)"""
    alternates_per_cluster: int = Field(10, ge=0)
    """first fallback: most popular items per (global cluster, language) beyond the medoids (0 = off)"""
    popularity_days: int = Field(7, ge=1)
    """days of positive engagement counted as popularity"""
    cold_start_days: int = Field(2, ge=1)
    """items younger than this many days form the cold-start index"""
    cold_start_k: int = Field(5, ge=1)
    """cold-start candidates per seed"""
    short_term_items: int = Field(3, ge=1)
    """short-term seeds per user at most"""
    positive_completion: float = Field(0.9, ge=0, le=1.5)
    """completion above which a view is positive"""
    unengaged_lookback_days: int = Field(90, ge=1)
    """an item sent but not engaged within this many days is not sent again"""
    played_completion: float = Field(0.1, ge=0, le=1.5)
    """a notified item opened the next day counts as played (engaged) from this completion on"""
    freshness_days: float = Field(3.0, gt=0)
    """transparent score: freshness decay (days)"""
    freshness_boost: float = Field(1.0, ge=0)
    """transparent score: boost of a brand-new item"""
    use_champion: bool = True
    """rank with the registry's two-tower champion when one exists"""
    shards: int = Field(4, ge=1, le=1024)
    """user-hash shards (one mapped task each, reading only their users' buckets); the outbox does not depend on it"""
    shard_users: int = Field(20_000, ge=1)
    """users scored per batch inside a shard: small batches bound memory and reuse it (fresh pages are slow)"""
    thumbnail_uri: str = "s3://recsys-media/thumbnails/{item_id}.jpg"
    """image URI pattern ({item_id} is replaced)"""

    @field_validator("thumbnail_uri")
    @classmethod
    def _only_item_id(cls, v: str) -> str:
        """Checked at load: a bad pattern would otherwise fail (or leak attributes) after the whole run."""
        try:
            fields = [(name, conv, spec) for _, name, spec, conv in string.Formatter().parse(v) if name is not None]
        except ValueError as exc:
            raise ValueError(f"not a valid pattern: {exc}") from None
        bad = [name for name, conv, spec in fields if name != "item_id" or conv or spec]
        if bad:
            raise ValueError(f"only {{item_id}} may be substituted, got {{{bad[0]}}}")
        return v
    experiment: str = "notifications"
    """MLflow experiment"""
    evaluate: bool = True
    """evaluate against next-day events when they exist"""


class TwoTowerSettings(_Strict):
    experiment: str = "two_tower"
    """MLflow experiment"""
    registered_model: str = "two_tower"
    """MLflow registered model of the champion"""
    experiments: list[str] = Field(default_factory=lambda: ["dedup_user_history", "simclr_concat_history_creator"],
                                   min_length=1)
    """experiment configs (configs/two_tower/*.yaml) the retrain trains"""
    experiment_overrides: dict[str, Any] = Field(default_factory=dict)
    """experiment-config keys set for every experiment of the run, e.g. {"epochs": 2}"""
    primary_metric: str = "ndcg_10"
    """metric a challenger must beat the champion on"""
    guard_metrics: list[str] = Field(default_factory=lambda: ["auc"])
    """metrics that may not drop by more than guard_tolerance"""
    guard_tolerance: float = Field(0.01, ge=0)
    """allowed absolute drop of a guard metric"""
    configs_dir: str = "configs/two_tower"
    """directory of the experiment configs"""


class GemSettings(_Strict):
    """Generic embedding model: content embedding -> collaborative space (see docs/gem.md)."""

    objective: Literal["pairs", "als"] = "pairs"
    """pairs: contrastive on mined pairs; als: distil ALS item factors"""
    out_dim: int = Field(128, gt=0, le=1024)
    """stored embedding size (PCA components of the model output)"""
    epochs: int = Field(20, ge=1, le=1000)
    """training epochs"""
    seed: int = Field(0, ge=0)
    """random seed (same seed + data = same embeddings)"""
    experiment: str = "gem"
    """MLflow experiment"""
    schedule: str = "@daily"
    """training schedule (cron or preset); runs also follow new pairs"""
    hidden_dim: int = Field(256, gt=0, le=8192)
    """hidden layer width"""
    batch_size: int = Field(512, ge=8)
    """pairs (or items) per step"""
    learning_rate: float = Field(3e-3, gt=0, le=1)
    """AdamW learning rate"""
    weight_decay: float = Field(1e-4, ge=0)
    """AdamW weight decay"""
    temperature: float = Field(0.05, gt=0, le=1)
    """InfoNCE temperature"""
    negative_weight: float = Field(0.5, ge=0)
    """pairs: weight of the mined-negative push-apart term"""
    bucket_balance: float = Field(0.25, ge=0, le=1)
    """pairs: 1 = every content-similarity bucket gets the same share, 0 = natural mix"""
    holdout_fraction: float = Field(0.1, gt=0, lt=1)
    """share of items with partners held out as cold-start probes"""
    eval_k: int = Field(20, ge=1)
    """neighbours in the cold-start evaluation"""
    max_eval_items: int = Field(2000, ge=1)
    """cold-start probes evaluated at most"""
    window_days: int = Field(14, ge=1, le=90)
    """als: days of events"""
    als_factors: int = Field(128, ge=2)
    """als: factors"""
    als_iterations: int = Field(15, ge=1)
    """als: iterations"""
    als_regularization: float = Field(1.0, ge=0)
    """als: regularization"""
    als_min_users: int = Field(2, ge=1)
    """als: items need this many users to be a target"""
    num_threads: int = Field(0, ge=0)
    """torch/ALS threads; 0 keeps the process default"""

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        return _time_based("gem", v)


class Settings(_Strict):
    data_root: str = "file://./data"
    # fsspec options for the data root, e.g. {"client_kwargs": {"endpoint_url": "http://minio:9000"}} for S3
    storage_options: dict[str, Any] = Field(default_factory=dict)
    mlflow_tracking_uri: str | None = None
    mlflow_artifact_root: str | None = None
    mlflow_ui_url: str = "http://127.0.0.1:5000"  # where people open MLflow (Airflow "MLflow run" links)
    # user buckets per events partition at ingest and per user-keyed step output (core/buckets.py);
    # shard counts that divide it read exactly their rows
    event_buckets: int = Field(64, ge=1, le=4096)
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

    @model_validator(mode="after")
    def _trimmed_fits(self) -> Settings:
        width = 128 if self.embedding.source == "content" else self.gem.out_dim
        if self.embedding.trimmed_dim > width:
            raise ValueError(f"embedding.trimmed_dim {self.embedding.trimmed_dim} is wider than the "
                             f"{self.embedding.source} embeddings ({width})")
        return self

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
REPO_ROOT = Path(__file__).resolve().parents[3]


def resolve_path(path: str | Path) -> Path:
    """A configured file or directory: absolute, else relative to the working directory, else the project."""
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return candidate
    return REPO_ROOT / candidate


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
        node[path[-1]] = scalar(raw)
    return out


def scalar(raw: str) -> Any:
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


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses what a config never needs and an attacker or a typo uses.

    Aliases are refused (an alias bomb expands a few lines into gigabytes) and so are duplicate keys
    (YAML's last-wins would silently drop a setting).
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(None, None, f"alias *{event.anchor} is not allowed",
                                                    event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path, error: type[ValueError] = ConfigError, what: str = "config file") -> Any:
    """Load a YAML file strictly (UTF-8, no aliases, no duplicate keys); problems raise ``error`` naming it."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8 text: byte {exc.start} cannot be decoded") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML: {exc}") from None


def load_settings(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Build settings from YAML (explicit path or ``RECSYS_CONFIG``) plus env overrides."""
    environ = dict(os.environ if environ is None else environ)
    path = path or environ.get("RECSYS_CONFIG")
    data: dict[str, Any] = {}
    if path:
        loaded = read_yaml(path) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must contain a mapping, got {type(loaded).__name__}")
        data = loaded
    data = _merge(data, _env_overrides(environ))
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid config{f' {path}' if path else ''}: {problems(exc)}") from None


def problems(exc: ValidationError) -> str:
    """One line per pydantic error: ``section.key: message``."""
    return "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings (cached); tests call ``get_settings.cache_clear()`` after changing env."""
    return load_settings()
