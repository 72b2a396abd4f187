"""Byte snapshots of committed partitions, keyed by logical path (the random ``v-<uuid>/`` commit prefix removed)."""

from __future__ import annotations

from pathlib import Path

from recsys_notify.core.storage import Storage


def committed_bytes(root: Path | str, datasets: list[str] | None = None) -> dict[str, bytes]:
    """``{"events/dt=20261114/part-00000.parquet": bytes}`` for every committed file under ``root``.

    Uncommitted or replaced versions are not included, so two runs that committed the same data compare equal.
    """
    storage = Storage(str(root))
    names = datasets if datasets is not None else sorted(
        p.name for p in Path(storage.root).iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    out = {}
    for dataset in names:
        for day in storage.dates(dataset):
            for path in storage.files(dataset, day):
                with storage.fs.open(path, "rb") as fh:
                    out[f"{dataset}/dt={day:%Y%m%d}/{path.rsplit('/', 1)[-1]}"] = fh.read()
    return out
