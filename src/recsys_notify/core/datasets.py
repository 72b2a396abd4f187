"""The dataset catalogue: every dataset's name, schema, producer and partitioning, declared once.

Steps, storage errors, DAG assets and docs all take dataset facts from here, so a name is never a
string literal elsewhere and a missing-upstream error always names the step (and command) to run.

Partitioning (all datasets are ``{dataset}/dt=YYYYMMDD/`` partitions):

* ``facts``: one partition per day holding that day's records (events); read as a window of days.
* ``dimension``: each partition lists the rows added or changed that day (items, users); read "as
  of" a date as the union of all partitions up to it, where **an id listed in several partitions
  takes its row from the newest one** (a re-ingested item updates it).
* ``daily``: a step's output for the run date (pairs, user medoids, outbox, ...).
* ``refresh``: a step's output on the dates it refreshed (global medoids, GEM embeddings); readers
  take the newest partition on or before their date.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

Partitioning = Literal["facts", "dimension", "daily", "refresh"]
# language codes the contract accepts for items and users (ISO 639-1)
LANGUAGES = frozenset({"en", "es", "pt", "hi", "id", "ru", "de", "fr", "tr", "ar", "ja", "ko", "vi", "th", "it"})
INGEST = "ingest"

# how each producer is run, for "run X for D first" errors
RUN_HINTS = {
    INGEST: "`recsys-notify generate` or `recsys-notify ingest {dataset}`",
    "synthetic": "`recsys-notify generate` (synthetic ground truth)",
    "pair_mining": "the pair_mining DAG (`recsys-notify pair-mining`)",
    "gem": "the gem DAG (`recsys-notify gem`)",
    "user_medoids": "the user_medoids DAG (`recsys-notify user-medoids`)",
    "global_medoids": "the global_medoids DAG (`recsys-notify global-medoids`)",
    "notifications": "the notifications DAG (`recsys-notify notifications`)",
}


class ContractError(ValueError):
    """Data does not match its contract (the partition as a whole cannot be accepted or read)."""


class ColumnError(ContractError):
    """A partition lacks columns its reader needs."""


@dataclass(frozen=True)
class Dataset:
    """One dataset: ``schema`` maps each column its producer writes to a type (documentation and checks)."""

    name: str
    producer: str
    partitioning: Partitioning
    schema: dict[str, str] = field(hash=False)
    description: str = ""
    key: tuple[str, ...] = ()

    @property
    def columns(self) -> list[str]:
        return list(self.schema)

    @property
    def run_hint(self) -> str:
        """How to produce this dataset, e.g. "the pair_mining DAG (`recsys-notify pair-mining`)"."""
        return RUN_HINTS.get(self.producer, f"the {self.producer} step").format(dataset=self.name)

    def check_columns(self, have: Iterable[str], need: Iterable[str] | None = None, where: str = "") -> None:
        """Fail, naming the columns and the producer, when ``have`` lacks any of ``need`` (default: the schema)."""
        have = set(have)
        missing = [c for c in (self.columns if need is None else need) if c not in have]
        if missing:
            raise ColumnError(f"{self.name}{f' {where}' if where else ''}: missing column(s) {', '.join(missing)} "
                              f"(written by {self.run_hint}; has {', '.join(sorted(have)) or 'none'})")


def _ds(name: str, producer: str, partitioning: Partitioning, schema: dict[str, str], description: str,
        key: tuple[str, ...] = ()) -> Dataset:
    return Dataset(name, producer, partitioning, schema, description, key)


_QUARANTINE = {"reason": "string"}

EVENTS = _ds("events", INGEST, "facts", {
    "user_id": "int64", "item_id": "int64", "session_id": "int64", "ts": "timestamp[us, UTC]",
    "watch_time_s": "float64", "duration_s": "float64", "liked": "bool", "shared": "bool", "completion": "float64",
    "bucket": "int32",
}, "validated interactions of one day; completion = watch_time_s / duration_s; bucket = user hash mod the "
   "partition's `buckets` (rows sorted by it, one row group each: core/buckets.py)")
ITEMS = _ds("items", INGEST, "dimension", {
    "item_id": "int64", "creator_id": "int64", "language": "string", "duration_s": "float64",
    "created_ts": "timestamp[us, UTC]", "caption": "string", "embedding": "list<float32>[128]",
}, "videos added or changed that day, with their PCA-ordered content embedding", ("item_id",))
USERS = _ds("users", INGEST, "dimension", {
    "user_id": "int64", "language": "string", "signup_ts": "timestamp[us, UTC]",
}, "users added or changed that day", ("user_id",))
FRAMES = _ds("frames", INGEST, "dimension", {
    "item_id": "int64", "frame_ts": "float64", "embedding": "list<float32>[128]", "image_uri": "string",
}, "optional keyframes of items: offset in seconds, embedding in the item content-embedding space, image URI",
    ("item_id", "frame_ts"))
EVENTS_QUARANTINE = _ds("events_quarantine", INGEST, "facts", _QUARANTINE, "rejected events rows with the reason")
ITEMS_QUARANTINE = _ds("items_quarantine", INGEST, "facts", _QUARANTINE, "rejected items rows with the reason")
USERS_QUARANTINE = _ds("users_quarantine", INGEST, "facts", _QUARANTINE, "rejected users rows with the reason")
FRAMES_QUARANTINE = _ds("frames_quarantine", INGEST, "facts", _QUARANTINE, "rejected frames rows with the reason")
TRUTH_ITEMS = _ds("truth_items", "synthetic", "dimension", {"item_id": "int64", "topic": "int64", "style": "int64"},
                  "synthetic worlds only: the hidden topic and style of each item (offline evaluation)", ("item_id",))
TRUTH_USERS = _ds("truth_users", "synthetic", "dimension",
                  {"user_id": "int64", "topics": "list<int64>", "topic_weights": "list<float64>"},
                  "synthetic worlds only: each user's interest topics and weights (offline evaluation)", ("user_id",))
TRUTH_FRAMES = _ds("truth_frames", "synthetic", "dimension",
                   {"item_id": "int64", "frame_ts": "float64", "on_topic": "bool"},
                   "synthetic worlds only: whether each keyframe shows its item's topic (offline evaluation)",
                   ("item_id", "frame_ts"))

PAIR_INTERACTIONS = _ds("pair_interactions", "pair_mining", "daily", {
    "user_id": "int64", "item_id": "int64", "label": "string", "events": "int64", "watch_time_s": "float64",
    "completion": "float64", "liked": "bool",
}, "labelled (client, item) interactions of the mining window after the neutral and positive-share filters")
PAIR_ITEMS = _ds("pair_items", "pair_mining", "daily", {
    "item_id": "int64", "creator_id": "int64", "language": "string", "duration_s": "float64", "items_dt": "date32",
    "interactions": "int64", "clients": "int64",
}, "items of pair_interactions with their metadata")
PAIR_ITEMS_QUARANTINE = _ds("pair_items_quarantine", "pair_mining", "daily", {
    "item_id": "int64", "interactions": "int64", "clients": "int64", "reason": "string",
}, "items with interactions but unknown to items")
PAIRS = _ds("pairs", "pair_mining", "daily", {
    "item1": "int64", "item2": "int64", "pair_type": "string", "num_clients": "int64", "content_sim": "float64",
    "sim_bucket": "int64",
}, "positive and negative item pairs counted in distinct clients, with content similarity")
GEM_EMBEDDINGS = _ds("gem_embeddings", "gem", "refresh", {"item_id": "int64", "embedding": "list<float32>"},
                     "GEM vector of every item known on the date (PCA-ordered)", ("item_id",))
USER_MEDOIDS = _ds("user_medoids", "user_medoids", "daily", {
    "user_id": "int64", "item_id": "int64", "cluster_id": "int64", "cluster_size": "int64", "weight": "float64",
    "importance": "float64", "rank": "int64",
}, "each user's long-term interests: up to max_medoids items, most important cluster first")
GLOBAL_CLUSTERS = _ds("global_clusters", "global_medoids", "refresh", {
    "item_id": "int64", "cluster_id": "int64", "distance": "float64",
}, "global cluster of every user-medoid item (stable cluster ids)")
GLOBAL_MEDOIDS = _ds("global_medoids", "global_medoids", "refresh", {
    "cluster_id": "int64", "language": "string", "item_id": "int64", "cluster_size": "int64",
    "language_items": "int64", "vector": "list<float32>", "source": "string", "override_id": "string",
    "centroid": "list<float32>",
}, "representative item per (cluster, language); language '*' is the cross-language medoid")
TEMPLATES = _ds("templates", "global_medoids", "refresh", {
    "cluster_id": "int64", "language": "string", "template_id": "string", "title": "string", "body": "string",
    "source": "string", "keywords": "list<string>",
}, "notification templates per (cluster, language): ops-written or automatic")
OVERRIDES = _ds("overrides", "global_medoids", "refresh", {
    "override_id": "string", "action": "string", "cluster_id": "int64", "language": "string", "item_id": "int64",
    "reason": "string", "requested_by": "string", "requested_at": "string", "run_id": "string",
    "created_dt": "string", "expires": "string", "revoked_dt": "string", "revoked_by": "string",
    "revoked_run_id": "string",
}, "full history of ops overrides as of the refresh (its own audit trail)")
OUTBOX = _ds("outbox", "notifications", "daily", {
    "user_id": "int64", "date": "date32", "language": "string", "item_id": "int64", "cluster_id": "int64",
    "template_id": "string", "title": "string", "body": "string", "thumbnail": "string", "score": "float64",
    "source": "string", "model_version": "string", "reason": "string", "holdout": "bool", "frame_ts": "float64",
    "image_uri": "string",
}, "one message per eligible user (holdout rows flagged, not sent); image_uri is the chosen keyframe "
   "(frame_ts seconds into the video) or the cover thumbnail (frame_ts null)")
DELIVERY_LOG = _ds("delivery_log", "notifications", "daily", {
    "user_id": "int64", "date": "date32", "item_id": "int64", "cluster_id": "int64", "template_id": "string",
    "source": "string", "model_version": "string", "holdout": "bool", "status": "string",
}, "one row per (user, date) queued or held out")
ITEM_POPULARITY = _ds("item_popularity", "notifications", "daily", {
    "item_id": "int64", "positives": "int64",
}, "positive interactions per item over notifications.popularity_days ending on the date: the one input every "
   "notification shard shares, counted once per run before the shards")
ITEM_POSITIVES = _ds("item_positives", "notifications", "daily", {
    "item_id": "int64", "positives": "int64",
}, "positive interactions per item on the date alone, committed with item_popularity: a later run sums the "
   "days it can reuse (same events version, same positive rule) instead of scanning their events again")
FRAMES_TRIMMED = _ds("frames_trimmed", "notifications", "dimension", {
    "item_id": "int64", "frame_ts": "float64", "embedding": "list<float32>", "image_uri": "string",
}, "the frames partition of the date with embeddings cut to embedding.trimmed_dim, committed with "
   "item_popularity: notification shards read these instead of the frames when every frames partition has one",
    ("item_id", "frame_ts"))
DELIVERY_FEEDBACK = _ds("delivery_feedback", "notifications", "daily", {
    "user_id": "int64", "item_id": "int64", "sent_date": "date32", "engaged": "bool", "delivered": "bool",
    "opened": "bool", "played": "bool",
}, "the previous day's sends: delivered (handed to the sender), opened (any event of the item on the date), "
   "played (an event reaching notifications.played_completion); engaged = played")

CATALOGUE: dict[str, Dataset] = {d.name: d for d in (
    EVENTS, ITEMS, USERS, EVENTS_QUARANTINE, ITEMS_QUARANTINE, USERS_QUARANTINE, TRUTH_ITEMS, TRUTH_USERS,
    FRAMES, FRAMES_QUARANTINE, TRUTH_FRAMES,
    PAIR_INTERACTIONS, PAIR_ITEMS, PAIR_ITEMS_QUARANTINE, PAIRS, GEM_EMBEDDINGS, USER_MEDOIDS, GLOBAL_CLUSTERS,
    GLOBAL_MEDOIDS, TEMPLATES, OVERRIDES, ITEM_POPULARITY, ITEM_POSITIVES, FRAMES_TRIMMED, OUTBOX, DELIVERY_LOG,
    DELIVERY_FEEDBACK,
)}
RAW = {"events": EVENTS, "items": ITEMS, "users": USERS, "frames": FRAMES}
QUARANTINE = {"events": EVENTS_QUARANTINE, "items": ITEMS_QUARANTINE, "users": USERS_QUARANTINE,
              "frames": FRAMES_QUARANTINE}


_ARROW = {"int64": "int64", "float64": "float64", "bool": "bool_", "string": "string", "date32": "date32"}


def arrow_schema(dataset: Dataset, columns: list[str] | None = None) -> Any:
    """The pyarrow schema of ``dataset``'s scalar columns (all, or ``columns`` in that order)."""
    import pyarrow as pa  # not at module level: DAG files import this module at parse time

    names = dataset.columns if columns is None else columns
    return pa.schema([(c, getattr(pa, _ARROW[dataset.schema[c]])()) for c in names])


SHARD_INFIX = "_shard_"


def shard_of(dataset: Dataset, shard: int, shards: int) -> Dataset:
    """One shard's partial of ``dataset`` (a dataset per shard lets shards commit independently)."""
    return _ds(f"{dataset.name}{SHARD_INFIX}{shard:03d}_of_{shards:03d}", dataset.producer, "daily", dataset.schema,
               f"{dataset.name} of shard {shard} of {shards}, combined into {dataset.name}")


def user_medoid_shard(shard: int, shards: int) -> Dataset:
    return shard_of(USER_MEDOIDS, shard, shards)


def produced_by(step: str) -> list[Dataset]:
    """The datasets a step writes (its Airflow assets), in catalogue order."""
    return [d for d in CATALOGUE.values() if d.producer == step]


def lookup(name: str) -> Dataset:
    """The catalogue entry of ``name`` (shard partials included)."""
    if name in CATALOGUE:
        return CATALOGUE[name]
    base = name.split(SHARD_INFIX)[0]
    if SHARD_INFIX in name and base in CATALOGUE:
        return _ds(name, CATALOGUE[base].producer, "daily", CATALOGUE[base].schema, f"{base} shard partial")
    raise KeyError(f"unknown dataset {name!r}; known: {', '.join(CATALOGUE)}")
