"""Every file in dags/ parses into well-formed DAGs that follow the project's conventions.

Checked per DAG file: no import errors, only DAG files in dags/, tags, owner ``recsys``, retries >= 1
on every task, catchup off, a data-interval (time-based) schedule so backfills process whole days,
trigger-form Params with valid JSON schemas and valid defaults, only ``airflow``/``recsys_notify``
(plus stdlib) imported, and no heavy library loaded at parse time.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recsys_notify.core.dag_support import OWNER

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "dags"
DAG_FILES = sorted(DAGS.glob("*.py")) if DAGS.is_dir() else []
EXPECTED_DAGS = ["pair_mining", "gem", "user_medoids", "global_medoids", "notifications", "two_tower",
                 "refresh_policy_study"]
MANUAL_DAGS = ("refresh_policy_study",)
HEAVY = ["pandas", "pyarrow", "torch", "sklearn", "scipy", "mlflow", "duckdb", "faiss", "pyspark", "hdbscan",
         "implicit", "matplotlib"]


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS), safe_mode=False)


def dags_of(dagbag, path: Path) -> list:
    return [dag for dag in dagbag.dags.values() if Path(dag.fileloc).resolve() == path.resolve()]


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


@pytest.mark.parametrize("dag_id", EXPECTED_DAGS)
def test_expected_pipeline_dag_is_defined_by_its_file(dagbag, dag_id):
    path = DAGS / f"{dag_id}.py"
    if not path.exists():
        pytest.skip(f"dags/{dag_id}.py not added yet")
    assert dag_id in {dag.dag_id for dag in dags_of(dagbag, path)}


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_conventions(dagbag, path):
    from airflow.sdk.definitions.timetables.assets import AssetOrTimeSchedule
    from airflow.sdk.definitions.timetables.interval import CronDataIntervalTimetable, DeltaDataIntervalTimetable
    from airflow.sdk.definitions.timetables.simple import NullTimetable
    from jsonschema.validators import validator_for

    dags = dags_of(dagbag, path)
    assert dags, f"{path.name} defines no DAG (only DAG files belong in dags/)"
    for dag in dags:
        where = f"{path.name}:{dag.dag_id}"
        assert dag.tags, f"{where} has no tags"
        assert dag.catchup is False, f"{where} must set catchup=False (backfills are explicit)"
        assert dag.start_date is not None and dag.start_date.utcoffset() is not None, \
            f"{where} needs a tz-aware start_date"
        assert dag.tasks, f"{where} has no tasks"
        for t in dag.tasks:
            assert t.owner == OWNER, f"{where}.{t.task_id} owner is {t.owner!r}, expected {OWNER!r}"
            assert t.retries >= 1, f"{where}.{t.task_id} has retries={t.retries}"
        timetable = dag.timetable
        if isinstance(timetable, AssetOrTimeSchedule):
            timetable = timetable.timetable
        manual = dag.dag_id in MANUAL_DAGS  # studies over a date range: triggered by hand, nothing to backfill
        assert manual == isinstance(timetable, NullTimetable), f"{where}: only {MANUAL_DAGS} are manual-only"
        assert manual or isinstance(timetable, (CronDataIntervalTimetable, DeltaDataIntervalTimetable)), (
            f"{where} schedule {type(dag.timetable).__name__} is not a data-interval time schedule "
            "(use dag_support.data_interval_schedule so the logical date is the day processed)")
        for name in dag.params:
            param = dag.params.get_param(name)
            schema = param.schema
            validator_for(schema).check_schema(schema)
            assert "type" in schema or "enum" in schema, f"{where} param {name!r} has no JSON-schema type"
            assert param.description, f"{where} param {name!r} has no description for the trigger form"
            try:  # scheduled runs use the defaults: one must exist (None is fine) and satisfy the schema
                param.resolve()
            except Exception as exc:
                pytest.fail(f"{where} param {name!r} default is unusable: {exc}")


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_imports_only_airflow_and_recsys_notify(path):
    allowed = {"airflow", "recsys_notify"} | set(sys.stdlib_module_names)
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    assert roots <= allowed, f"{path.name} imports {sorted(roots - allowed)}; put that logic in recsys_notify"


@pytest.mark.skipif(not DAG_FILES, reason="no DAG files yet")
def test_dag_files_do_not_load_heavy_libraries_at_parse_time():
    """Import each DAG file in a fresh interpreter, as the DAG processor does, and list what it pulled in."""
    script = (
        "import importlib.util, json, sys\n"
        "heavy = json.loads(sys.argv[1]); out = {}\n"
        "for path in sys.argv[2:]:\n"
        "    before = {m for m in heavy if m in sys.modules}\n"
        "    spec = importlib.util.spec_from_file_location('dagfile_' + str(abs(hash(path))), path)\n"
        "    try:\n"
        "        spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "    except Exception:\n"
        "        pass  # reported by test_no_import_errors\n"
        "    out[path] = sorted({m for m in heavy if m in sys.modules} - before)\n"
        "print(json.dumps(out))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]))
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(HEAVY), *map(str, DAG_FILES)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = {Path(p).name: mods for p, mods in json.loads(proc.stdout.strip().splitlines()[-1]).items() if mods}
    assert loaded == {}, f"DAG files import heavy libraries at top level: {loaded}"
