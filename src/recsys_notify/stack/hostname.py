"""``[core] hostname_callable`` for the stack's Celery workers.

Two workers share one machine, so the FQDN Airflow records on each task instance would not say which
worker ran it; each worker process gets its Celery node name (``worker1@host``) in the environment.
"""

from __future__ import annotations

import os
import socket


def worker_hostname() -> str:
    return os.environ.get("RECSYS_STACK_HOSTNAME") or socket.getfqdn()
