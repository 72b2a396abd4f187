"""The parity tests' small local Spark session (skipped without pyspark or a Java 17 runtime)."""

from __future__ import annotations

import logging
import os
import shutil
import sys

import pytest

SPARK_CONF = {
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "2",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.adaptive.enabled": "false",
    "spark.sql.codegen.wholeStage": "false",  # compiling code costs more than it saves on tiny data
    "spark.driver.memory": "1g",
}


@pytest.fixture(scope="module")
def spark():
    """Stopped when its module ends: a live session makes later MLflow clients query it through py4j."""
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("pyspark needs a Java 17 runtime (.ci/run installs openjdk-17)")
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # Python workers need this venv's pandas
    builder = SparkSession.builder.master("local[2]").appName("recsys-notify-tests")
    for key, value in SPARK_CONF.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
    logging.getLogger("py4j").setLevel(logging.WARNING)  # its __del__ logs after pytest closed the streams
