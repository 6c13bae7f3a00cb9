"""The API's app factory: ``create_app(config)``.

Configuration (keys of ``config``, else environment variables):
- ``MPU_ACCESS_KEYS``: access keys (see :mod:`api.auth`); the app refuses to start without any.
- ``MPU_REDIS_URL``: the task store (default ``redis://127.0.0.1:6379/0``).
- ``STORE``: a task store object (tests); default: :class:`workers.store.TaskStore` on the URL.
- ``ENQUEUE``: ``(app_id, task_id) -> None`` that queues a mix; default: the Celery task.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from apiflask import APIFlask

from api import errors
from api.auth import AccessKey, parse_access_keys
from api.tasks import bp as tasks_bp

#: Largest request body accepted, in bytes.
MAX_CONTENT_LENGTH = 64 * 1024


class Services:
    """What the views use: access keys, the store (made on first use), the enqueue function."""

    def __init__(self, access_keys: dict[str, AccessKey], redis_url: str, store: Any, enqueue: Any) -> None:
        self.access_keys = access_keys
        self.redis_url = redis_url
        self._store = store
        self.enqueue: Callable[[str, str], None] = enqueue or _celery_enqueue

    def store(self) -> Any:
        """The task store."""
        if self._store is None:
            from workers.settings import WorkerSettings
            from workers.store import TaskStore

            settings = WorkerSettings.from_env()
            self._store = TaskStore.from_url(
                self.redis_url,
                cooldown_seconds=settings.cooldown_seconds,
                lease_seconds=settings.lease_seconds,
            )
        return self._store


def _celery_enqueue(app_id: str, task_id: str) -> None:
    from workers.celery_app import enqueue_mix

    enqueue_mix(app_id, task_id)


def create_app(config: Mapping[str, Any] | None = None) -> APIFlask:
    """Build the API.

    Raises:
        ValueError: no access keys configured (and ``MPU_AUTH_DISABLED`` not set), or malformed keys.
    """
    settings = dict(config or {})
    keys_text = settings.get("MPU_ACCESS_KEYS", os.environ.get("MPU_ACCESS_KEYS", ""))
    keys = parse_access_keys(keys_text)
    if not keys:
        raise ValueError('no access keys: set MPU_ACCESS_KEYS="AK:SECRET" (see README)')
    app = APIFlask(__name__, title="rtc-mpu", version="0.1.0", spec_path="/openapi.json", docs_path="/docs")
    app.config["MAX_CONTENT_LENGTH"] = MAX_CONTENT_LENGTH
    app.config["SPEC_FORMAT"] = "json"
    app.security_schemes = {"BasicAuth": {"type": "http", "scheme": "basic"}}
    app.extensions["mpu"] = Services(
        keys,
        settings.get("MPU_REDIS_URL", os.environ.get("MPU_REDIS_URL", "redis://127.0.0.1:6379/0")),
        settings.get("STORE"),
        settings.get("ENQUEUE"),
    )
    errors.register(app)
    app.register_blueprint(tasks_bp)
    return app
