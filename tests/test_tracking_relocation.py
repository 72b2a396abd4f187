"""The default MLflow store (SQLite + artifacts under the data root) keeps working after the root moves."""

from __future__ import annotations

import shutil

import mlflow

from recsys_notify.core.config import load_settings
from recsys_notify.core.tracking import tracked_run


def _log_run(root, name: str) -> str:
    settings = load_settings(environ={"RECSYS__DATA_ROOT": str(root)})
    with tracked_run("relocation", name, params={"p": 1}, settings=settings) as run:
        mlflow.log_text(f"artifact of {name}", "notes/readme.txt")
        return run.info.run_id


def _files(root) -> set[str]:
    return {str(p.relative_to(root)) for p in (root / "mlartifacts").rglob("*") if p.is_file()}


def test_a_copied_root_writes_and_reads_its_own_artifacts(tmp_path):
    original, copy = tmp_path / "a" / "data", tmp_path / "b" / "data"
    first = _log_run(original, "first")
    shutil.copytree(original, copy)
    before = _files(original)

    second = _log_run(copy, "second")
    assert _files(original) == before, "the copy wrote into the original data root"
    assert any(second in f for f in _files(copy))
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{copy / 'mlflow.db'}")
    for run_id, name in ((first, "first"), (second, "second")):
        assert client.get_run(run_id).info.artifact_uri.startswith((copy / "mlartifacts").as_uri())
        path = client.download_artifacts(run_id, "notes/readme.txt", str(tmp_path / name))
        assert open(path).read() == f"artifact of {name}"


def test_a_moved_root_keeps_its_runs_and_the_original_stays_untouched(tmp_path):
    original, moved = tmp_path / "a" / "data", tmp_path / "b" / "data"
    first = _log_run(original, "first")
    moved.parent.mkdir()
    shutil.move(original, moved)
    _log_run(moved, "second")
    assert not original.exists()
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{moved / 'mlflow.db'}")
    exp = client.get_experiment_by_name("relocation")
    assert exp.artifact_location == (moved / "mlartifacts" / "relocation").as_uri()
    assert client.download_artifacts(first, "notes/readme.txt", str(tmp_path / "dl"))
