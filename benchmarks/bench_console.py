"""Ops console response time on a refresh of 500+ clusters: a cold request (reads the refresh) vs warm ones.

A 3,000-user, 8,000-item world clustered into k=600 global clusters; the console's endpoints are called
in this process (FastAPI TestClient, the Airflow login replaced by a fixed user). The first request
reads the refresh (and the catalogue as of its date); later ones (paging, search, a cluster's detail)
use the refresh kept in memory for that manifest version. Prints seconds and the cold/warm ratio.

    python benchmarks/bench_console.py    # ~2 min, most of it building the world and the refresh
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

DAY = date(2026, 11, 13)


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-console-")) / "data"
    os.environ.update({"RECSYS__DATA_ROOT": str(root), "RECSYS__GLOBAL_MEDOIDS__K": "600"})
    from fastapi.testclient import TestClient

    from recsys_notify.console import app as console
    from recsys_notify.core.config import get_settings
    from recsys_notify.core.storage import Storage
    from recsys_notify.global_medoids import step as gm
    from recsys_notify.synthetic import generate, generator_config
    from recsys_notify.user_medoids import step as um

    storage, settings = Storage(str(root)), get_settings()
    generate(storage, generator_config(3000, 8000, 10, date(2026, 11, 14), 5))
    um.run(storage, settings, DAY, {"shards": 1})
    gm.run(storage, settings, DAY)

    class User:
        def get_name(self) -> str:
            return "bench"

    app = console.create_app()
    app.dependency_overrides[console.current_user] = User
    client = TestClient(app)

    def timed(path: str, **params: object) -> tuple[float, dict]:
        start = time.perf_counter()
        resp = client.get(path, params=params)
        resp.raise_for_status()
        return time.perf_counter() - start, resp.json()

    cold, first = timed("/api/clusters")
    print(f"clusters in the refresh: {first['total']}")
    warm = {name: min(timed(path, **params)[0] for _ in range(3)) for name, path, params in [
        ("page 1", "/api/clusters", {}), ("page 5", "/api/clusters", {"page": 5}),
        ("search keyword", "/api/clusters", {"q": "cats"}), ("search item id", "/api/clusters", {"q": 4711}),
        ("cluster detail", "/api/clusters/7", {})]}
    print(f"cold page 1 (reads the refresh): {cold:.3f} s")
    for name, seconds in warm.items():
        print(f"warm {name}: {seconds:.3f} s (cold/warm x{cold / seconds:.1f})")


if __name__ == "__main__":
    main()
