"""The pair-mining SQL gives identical outputs on DuckDB and Spark (pyspark local mode, one small session)."""

from __future__ import annotations

from datetime import date

import pytest

from recsys_notify.core.config import PairMiningSettings
from recsys_notify.core.sql_engine import open_engine
from recsys_notify.core.storage import Storage
from recsys_notify.pair_mining.step import compute_pairs
from recsys_notify.synthetic import GeneratorConfig, generate
from tests.spark_session import SPARK_CONF

END = date(2026, 11, 14)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory) -> Storage:
    storage = Storage(str(tmp_path_factory.mktemp("spark-world") / "data"))
    generate(storage, GeneratorConfig(users=250, items=600, days=3, end=END, seed=11))
    return storage


def test_duckdb_and_spark_give_identical_outputs(spark, tiny_world):
    # a small cap so capping and its md5 sampling take part; min_clients 1 keeps every candidate pair
    cfg = PairMiningSettings(window_days=3, min_clients=1, max_positives_per_client=12)
    with open_engine("duckdb") as engine:
        duck = compute_pairs(tiny_world, END, cfg, engine)
    with open_engine("spark", spark_master="local[2]", spark_conf=SPARK_CONF) as engine:
        assert engine.spark is spark  # reuses the module's session
        sprk = compute_pairs(tiny_world, END, cfg, engine)

    assert duck.stats["clients_capped"] > 0 and duck.stats["pairs_negative"] > 0
    assert duck.stats == sprk.stats
    for name in ("interactions", "items", "quarantine", "pairs"):
        a, b = getattr(duck, name), getattr(sprk, name)
        assert a.schema == b.schema, name
        assert a.num_rows > 0 or name == "quarantine"
        assert a.equals(b), name
    # both engines return each output in its key order (DuckDB orders the relation, Spark sorts in Arrow)
    for name, keys in {"interactions": ["user_id", "item_id"], "items": ["item_id"],
                       "pairs": ["item1", "item2", "pair_type"]}.items():
        table = getattr(sprk, name)
        assert table.equals(table.sort_by([(k, "ascending") for k in keys])), name
