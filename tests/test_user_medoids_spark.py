"""User medoids on Spark (applyInPandas over user buckets) equal the embedded shards (pyspark local mode)."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from recsys_notify.core.config import Settings
from recsys_notify.core.storage import Storage
from recsys_notify.synthetic import GeneratorConfig, generate
from recsys_notify.user_medoids import step
from recsys_notify.user_medoids.spark import compute_spark
from tests.spark_session import SPARK_CONF

END = date(2026, 11, 14)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory) -> Storage:
    storage = Storage(str(tmp_path_factory.mktemp("spark-medoids") / "data"))
    generate(storage, GeneratorConfig(users=250, items=600, days=3, end=END, seed=11, buckets=8))
    return storage


def test_spark_medoids_equal_embedded_shards(spark, tiny_world):
    settings = Settings(data_root=tiny_world.root)
    settings.user_medoids.window_days = 3
    embedded = pd.concat([step.compute_shard(tiny_world, settings, END, s, 2)[0] for s in range(2)])
    embedded = embedded.sort_values(["user_id", "rank"]).reset_index(drop=True)
    stats = [step.compute_shard(tiny_world, settings, END, s, 2)[1] for s in range(2)]

    settings.user_medoids.engine = "spark"
    settings.user_medoids.spark_master = "local[2]"
    settings.user_medoids.spark_conf = SPARK_CONF
    assert step.parts(tiny_world, settings, END) == [0]  # one Spark job instead of mapped shards
    medoids, spark_stats, _ = compute_spark(tiny_world, settings, END)

    assert len(embedded) > 0 and spark_stats == stats[0].add(stats[1])
    pd.testing.assert_frame_equal(medoids, embedded)
