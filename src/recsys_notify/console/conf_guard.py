"""Refuse unknown ``conf`` keys when a DAG run is triggered, before Airflow creates the run.

Airflow merges unknown conf keys into the run's params without complaint, so a misspelled key
(``replace_representative``) ran a plain refresh. This ASGI middleware (installed by the
``recsys_console`` plugin as a root middleware of the API server) reads ``POST .../dags/{id}/dagRuns``,
compares the conf keys with the DAG's declared Params and answers HTTP 400 naming the unknown key
and its closest known one. The UI's trigger form and REST clients both go through it.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from typing import Any

_TRIGGER = re.compile(r"/api/v2/dags/(?P<dag_id>[^/]+)/dagRuns/?$")

KnownParams = Callable[[str], "set[str] | None"]


def dag_param_names(dag_id: str) -> set[str] | None:
    """Params the newest serialized version of ``dag_id`` declares (None: unknown DAG or no Params declared)."""
    from airflow.models.serialized_dag import SerializedDagModel

    dag = SerializedDagModel.get_dag(dag_id)
    return set(dag.params) if dag is not None and len(dag.params) else None


def unknown_conf_problem(dag_id: str, conf: Any, known: set[str] | None) -> str | None:
    """The error for conf keys ``dag_id`` does not declare, or None when every key is known."""
    if known is None or not isinstance(conf, dict):
        return None
    unknown = sorted(set(conf) - known)
    if not unknown:
        return None
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hints.append(f"{key} (did you mean {close[0]}?)" if close else key)
    return (f"error: unknown conf key(s) for DAG {dag_id}: {', '.join(hints)}; nothing was triggered "
            f"(known: {', '.join(sorted(known))})")


class UnknownConfGuard:
    """ASGI middleware: HTTP 400 for a trigger whose conf names a key the DAG does not declare."""

    def __init__(self, app: Any, known_params: KnownParams = dag_param_names) -> None:
        self.app = app
        self.known_params = known_params

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        match = _TRIGGER.search(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        messages, body, more = [], b"", True
        while more:
            message = await receive()
            messages.append(message)
            body += message.get("body", b"")
            more = message.get("more_body", False) and message["type"] == "http.request"
        problem = await self._problem(match["dag_id"], body)
        if problem is not None:
            payload = json.dumps({"detail": problem}).encode()
            await send({"type": "http.response.start", "status": 400,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(payload)).encode())]})
            await send({"type": "http.response.body", "body": payload})
            return

        async def replay() -> dict[str, Any]:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _problem(self, dag_id: str, body: bytes) -> str | None:
        import anyio

        try:
            conf = json.loads(body or b"{}").get("conf")
        except (ValueError, AttributeError):
            return None  # not a JSON object: the API's own validation answers
        if not conf:
            return None
        known = await anyio.to_thread.run_sync(self.known_params, dag_id)  # a metadata-DB read
        return unknown_conf_problem(dag_id, conf, known)
