"""The console's FastAPI app (mounted by ``plugins/recsys_console.py`` at ``/recsys-console``).

Read-only JSON endpoints over one refresh (:mod:`recsys_notify.console.views`), a ``check`` endpoint
that validates an ops request exactly as the step will (so bad input is answered on the page and no
run is created), and the page itself. Every endpoint needs the Airflow user (the UI's JWT cookie or
a bearer token): ``get_user`` is the API server's own dependency. Actions are not executed here: the
page triggers ``global_medoids`` through Airflow's REST API with the user's own session, so Airflow
checks their permission and records them as the triggering user (``requested_by`` in the audit trail).
"""

from __future__ import annotations

import threading
from datetime import date
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, ValidationError

URL_PREFIX = "/recsys-console"
CACHED_REFRESHES = 4
_REFRESHES: dict[tuple[Any, ...], Any] = {}
_LOCK = threading.Lock()
PAGE = Path(__file__).with_name("page.html")


class CheckBody(BaseModel):
    """A proposed action for the refresh of ``date`` (the conf the page will trigger with)."""

    date: date
    conf: dict[str, Any]


async def current_user(request: Request) -> Any:
    """The Airflow user of the request (bearer token or the UI's JWT cookie), or HTTP 401/403.

    The API server's own ``get_user`` (imported here, not at module import: every Airflow component
    loads plugins, only the API server serves them).
    """
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    return await get_user(request, None, await bearer_scheme(request))


User = Annotated[Any, Depends(current_user)]


def _storage_settings() -> tuple[Any, Any]:
    from recsys_notify.core.config import get_settings
    from recsys_notify.core.storage import storage_from_settings

    settings = get_settings()
    return storage_from_settings(settings), settings


def load_refresh(storage: Any, settings: Any, dt: date | None) -> Any:
    """The refresh of ``dt`` (newest when None) with the catalogue as of then and the previous refresh.

    Kept in memory per (data root, date, manifest version): a run that rewrites the refresh changes
    the version, so the page never shows a stale refresh, and paging or searching does not re-read it.
    """
    from recsys_notify.core.datasets import GLOBAL_MEDOIDS

    dates = storage.dates(GLOBAL_MEDOIDS.name)
    if not dates:
        raise HTTPException(404, "no global_medoids refresh yet: run the global_medoids DAG first")
    dt = dt or dates[-1]
    if dt not in dates:
        raise HTTPException(404, f"no global_medoids refresh for {dt} (refreshes: {', '.join(map(str, dates))})")
    # a refresh's four datasets are one commit, so its manifest version identifies what the page shows
    key = (storage.root_uri, dt, storage.manifest(GLOBAL_MEDOIDS.name, dt).get("version"))
    with _LOCK:  # endpoints run in a thread pool
        if key not in _REFRESHES:
            while len(_REFRESHES) >= CACHED_REFRESHES:
                _REFRESHES.pop(next(iter(_REFRESHES)))
            _REFRESHES[key] = _read_refresh(storage, settings, dt, [d for d in dates if d < dt])
        return _REFRESHES[key]


def _read_refresh(storage: Any, settings: Any, dt: date, earlier: list[date]) -> Any:
    from recsys_notify.console.views import Refresh
    from recsys_notify.core.datasets import GLOBAL_MEDOIDS, ITEMS
    from recsys_notify.core.inputs import as_of, resolve

    previous = None
    if earlier:
        previous = storage.read(GLOBAL_MEDOIDS.name, earlier[-1], ["cluster_id", "language", "centroid", "item_id"])
        previous = previous[previous["language"] == "*"]
    items = resolve(storage, {"items": as_of(ITEMS, dt)}).dimension("items", ["item_id", "language", "caption",
                                                                           "creator_id"])
    return Refresh(dt, storage.read(GLOBAL_MEDOIDS.name, dt), storage.read("global_clusters", dt),
                   storage.read("templates", dt), storage.read("overrides", dt), items, previous,
                   settings.notifications.thumbnail_uri)


def check_request(storage: Any, settings: Any, dt: date, conf: dict[str, Any], user: str) -> list[str]:
    """Problems with ``conf`` as a global_medoids request for ``dt`` (empty: the run will accept it)."""
    from recsys_notify.core.config import ConfigError
    from recsys_notify.core.step import parse_params
    from recsys_notify.global_medoids import overrides as ovr
    from recsys_notify.global_medoids.params import OverrideParams

    try:
        _, request = parse_params(settings, "global_medoids", {**conf, "requested_by": user, "run_id": "console"},
                                  OverrideParams)
    except ConfigError as exc:
        return [str(exc)]
    refresh = load_refresh(storage, settings, dt)
    try:
        ovr.validate(request, dt, refresh.items[["item_id", "language"]], refresh.active())
        ovr.validate_clusters(request, set(refresh.reps["cluster_id"].astype(int)))
    except ovr.OverrideError as exc:
        return [str(exc)]
    return []


def create_app() -> FastAPI:
    app = FastAPI(title="recsys-notify ops console", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", response_class=HTMLResponse)
    async def index(request: Request) -> Any:
        try:
            await current_user(request)
        except HTTPException:
            return RedirectResponse(f"../auth/login?next={request.url}")  # relative: works behind a proxy
        return HTMLResponse(PAGE.read_text())

    @app.get("/api/refreshes")
    def refreshes(user: User) -> dict[str, Any]:
        storage, _ = _storage_settings()
        return {"dates": [d.isoformat() for d in storage.dates("global_medoids")], "user": user.get_name()}

    @app.get("/api/clusters")
    def clusters(user: User, dt: date | None = None, q: str = "", page: Annotated[int, Query(ge=1)] = 1,
                 page_size: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
        from recsys_notify.console import views

        refresh = load_refresh(*_storage_settings(), dt)
        rows = views.search(refresh.rows, q)
        return {"dt": refresh.dt.isoformat(), **views.page(rows, page, page_size),
                "overrides": views.override_rows(refresh.active())}

    @app.get("/api/clusters/{cluster_id}")
    def cluster(cluster_id: int, user: User, dt: date | None = None) -> dict[str, Any]:
        from recsys_notify.console import views

        refresh = load_refresh(*_storage_settings(), dt)
        detail = views.cluster_detail(refresh, cluster_id)
        if detail is None:
            raise HTTPException(404, f"cluster {cluster_id} is not in the refresh of {refresh.dt}")
        return {"dt": refresh.dt.isoformat(), **detail}

    @app.post("/api/check")
    def check(body: dict[str, Any], user: User) -> dict[str, Any]:
        try:
            parsed = CheckBody.model_validate(body)
        except ValidationError as exc:
            return {"ok": False, "problems": [f"error: {e['loc'][-1]}: {e['msg']}" for e in exc.errors()]}
        problems = check_request(*_storage_settings(), parsed.date, parsed.conf, user.get_name())
        return {"ok": not problems, "problems": problems}

    return app
