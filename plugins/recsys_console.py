"""Airflow plugin: the "Global medoids" ops console and the trigger conf-key guard.

* ``fastapi_apps``: :mod:`recsys_notify.console.app` mounted at ``/recsys-console`` (behind the API
  server's authentication: every endpoint needs the user's Airflow JWT, cookie or bearer);
* ``external_views``: a "Global medoids" nav entry and a tab on the ``global_medoids`` DAG;
* ``fastapi_root_middlewares``: :class:`recsys_notify.console.conf_guard.UnknownConfGuard` (HTTP 400
  for a trigger whose conf names a key the DAG does not declare).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from recsys_notify.console.app import URL_PREFIX, create_app
from recsys_notify.console.conf_guard import UnknownConfGuard


class RecsysConsolePlugin(AirflowPlugin):
    name = "recsys_console"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Global medoids console"}]
    fastapi_root_middlewares = [{"middleware": UnknownConfGuard, "args": [], "kwargs": {},
                                 "name": "Unknown conf keys refused"}]
    external_views = [
        {"name": "Global medoids", "href": f"{URL_PREFIX.lstrip('/')}/", "destination": "nav", "category": "browse",
         "url_route": "global-medoids"},
        {"name": "Clusters", "href": f"{URL_PREFIX.lstrip('/')}/?dag_id={{DAG_ID}}", "destination": "dag",
         "url_route": "global-medoids-dag"},
    ]
