"""The operator dashboard: ``/dashboard/``, a page that lists the active tasks with their state, users,
layout, worker, counters, outputs, a live thumbnail and an HLS player, the worker nodes' loads and the
queue, with stop and layout buttons (issue 15).

Authentication: the API's access keys over HTTP Basic (:mod:`rtc_mpu.api.auth`, with its throttle of
failed attempts and the key's rate limit, except for the page, its scripts and HLS files, which are read
from disk), answered **401** with ``WWW-Authenticate: Basic`` when they are missing or wrong, so a
browser asks for them (a request without credentials is not counted as a failed attempt: a browser
always sends one first). A key bound to no AppId (``AK:SECRET``) is an
operator key: it sees every app's tasks, the worker nodes and the queue. A key bound to AppIds
(``AK:SECRET:app1|app2``) sees and acts on those apps' tasks only (no nodes, no queue). Everything the
page loads lives under ``/dashboard/``, the path a browser sends Basic credentials to once asked:

- ``GET /dashboard/``, ``GET /dashboard/dashboard.js``: the page and its script (package data
  ``dashboard_static/``);
- ``GET /dashboard/api/tasks``: the page's data as JSON, polled by the page (see :func:`tasks`);
- ``GET /dashboard/snapshot/<app_id>/<task_id>.jpg``: the task's latest snapshot (as
  ``GET /v1/apps/{app_id}/tasks/{task_id}/snapshot.jpg``);
- ``GET /dashboard/hls/<app_id>/<task_id>/<file>``: the task's HLS playlist and segments from
  ``MPU_HLS_DIR`` (what the stack's nginx serves at ``/hls/<app_id>/<task_id>/index.m3u8``), so the
  player is same-origin and an app key plays only its own apps;
- ``GET /dashboard/vendor/hls.min.js``: hls.js, installed from npm at build time (``make dashboard-js``,
  run by ``make venv``) into ``build/dashboard/node_modules`` (``MPU_DASHBOARD_NODE_MODULES`` to point
  elsewhere); 404 when it is not installed (the page then says so);
- ``POST /dashboard/api/apps/<app_id>/tasks/<task_id>/stop`` and ``.../layout``
  (``{"layout_ids": [..]}``): StopMPUTask and UpdateMPULayout through the service layer.

Cross-site request protection of the two POSTs, both required:

1. a CSRF token in the ``X-MPU-CSRF`` header: ``HMAC-SHA256(key secret, "dashboard-csrf:" + AccessKeyId)``
   (hex), handed to the page in ``GET /dashboard/api/tasks``; another site's page cannot read it
   (same-origin policy, no CORS headers here), and a custom header cannot be sent cross-site without
   a CORS preflight, which this API never grants. Basic authentication has no sessions, so the token
   is per access key; it is the same on every API process and changes with the key's secret;
2. the browser's ``Sec-Fetch-Site``, when sent, must be ``same-origin`` (the ``Origin`` header is
   not compared with ``Host``, which a reverse proxy may rewrite).

A refused POST answers 403 ``Forbidden.CSRF``. The watch link of a task with an ``rtc`` output,
``GET /dashboard/watch/<app_id>/<task_id>``, redirects to the stack's ``/watch/`` page
(``MPU_DASHBOARD_WEB_URL``, default ``http://<the request's host>:8081``, also the base of the nginx HLS
link) with a subscribe token minted for it in token mode (:func:`watch`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from apiflask import APIBlueprint, HTTPError
from flask import Response, current_app, g, redirect, request, send_file
from werkzeug.wrappers import Response as WerkzeugResponse

from rtc_mpu.api.auth import CHALLENGE, AccessKey, authenticate_any, throttle
from rtc_mpu.api.errors import api_error
from rtc_mpu.api.metrics import QUEUE
from rtc_mpu.api.schemas import TASK_ID, is_task_id
from rtc_mpu.api.service import APP_ID, MixService
from rtc_mpu.api.tasks import task_out
from rtc_mpu.api.tokens import TokenIssuer
from rtc_mpu.spec.storage import HLS_PLAYLIST, hls_dir, task_folder
from rtc_mpu.spec.text_rules import char_problem
from rtc_mpu.spec.tokens import Role
from rtc_mpu.workers.model import TaskRecord
from rtc_mpu.workers.store_protocol import TaskStoreProtocol

bp = APIBlueprint("dashboard", __name__, enable_openapi=False)

#: The header that carries the CSRF token of the state-changing POSTs.
CSRF_HEADER = "X-MPU-CSRF"
#: The error code of a refused cross-site (or token-less) POST.
CSRF_CODE = "Forbidden.CSRF"
#: Where ``make dashboard-js`` installs hls.js, relative to the source tree's root.
NODE_MODULES = Path("build") / "dashboard" / "node_modules"
HLS_JS = Path("hls.js") / "dist" / "hls.min.js"
#: Files of a task's HLS folder the dashboard serves, and their types.
HLS_FILE = re.compile(r"[A-Za-z0-9_-]{1,128}\.(m3u8|ts)")
HLS_TYPES = {"m3u8": "application/vnd.apple.mpegurl", "ts": "video/mp2t"}
#: Endpoints not counted against the key's rate limit (files from disk, no Redis): a page with several
#: HLS players fetches a playlist and a segment per second each.
UNLIMITED = frozenset({"dashboard.hls", "dashboard.hls_js", "dashboard.script", "dashboard.page"})
#: How long a subscribe token minted for the watch link is valid, in seconds.
WATCH_TOKEN_SECONDS = 600
#: The viewer's UserId in that token (``dashboard-<AccessKeyId>`` when it has this form).
USER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: The stack's web port (nginx: /watch/, /hls/) when MPU_DASHBOARD_WEB_URL is not set.
DEFAULT_WEB_PORT = 8081


def csrf_token(key: AccessKey | None) -> str:
    """The CSRF token of ``key`` (None: authentication disabled, tests only)."""
    if key is None:
        return hashlib.sha256(b"dashboard-csrf:auth-disabled").hexdigest()
    return hmac.new(key.secret.encode(), f"dashboard-csrf:{key.key_id}".encode(), hashlib.sha256).hexdigest()


def _key() -> AccessKey | None:
    key: AccessKey | None = g.get("dashboard_key")
    return key


def _allows(app_id: str) -> bool:
    key = _key()
    return key is None or key.allows(app_id)


def _is_operator() -> bool:
    key = _key()
    return key is None or not key.app_ids


@bp.before_request
def guard() -> None:
    """Every dashboard request: HTTP Basic credentials (401 with a challenge when missing or wrong), the
    key's rate limit, then the path's AppId and TaskId (form, and the key's apps).

    Raises:
        HTTPError: 401, 429, 400, or 403 ``Forbidden`` (an AppId this key may not act on).
    """
    services = current_app.extensions["mpu"]
    key: AccessKey | None = None
    if not services.auth_disabled:
        challenge = api_error(
            401,
            "Unauthorized",
            "authentication required: HTTP Basic with an access key (AccessKeyId:secret)",
            headers={"WWW-Authenticate": CHALLENGE},
        )
        if request.authorization is None:
            # A browser's first request carries no credentials: asked for, not counted as a failure.
            raise challenge
        try:
            key = authenticate_any(services.access_keys)
        except HTTPError as exc:
            if exc.status_code != 403:
                raise
            raise challenge from None
        if request.endpoint not in UNLIMITED:
            throttle(key.key_id)
    g.dashboard_key = key
    args = request.view_args or {}
    app_id, task_id = args.get("app_id"), args.get("task_id")
    if app_id is not None:
        if not APP_ID.fullmatch(app_id):
            raise api_error(400, "InvalidParameter", "must be 1-64 characters of A-Z a-z 0-9 _ -", "app_id")
        if not _allows(app_id):
            raise api_error(403, "Forbidden", f"this access key may not act on app {app_id}")
    if task_id is not None and not is_task_id(task_id):
        raise api_error(400, "InvalidParameter", f"task_id {TASK_ID.error}", "task_id")


def _check_csrf() -> None:
    """The cross-site protection of the state-changing requests (module docstring).

    Raises:
        HTTPError: 403 ``Forbidden.CSRF``.
    """
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site != "same-origin":
        raise api_error(403, CSRF_CODE, f"cross-site request refused (Sec-Fetch-Site: {site})")
    sent = request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(sent.encode(), csrf_token(_key()).encode()):
        raise api_error(403, CSRF_CODE, f"missing or wrong {CSRF_HEADER} header (reload the dashboard)")


def _service() -> MixService:
    mix_service: MixService = current_app.extensions["mpu"].service
    return mix_service


def _web_url() -> str:
    configured = str(
        current_app.config.get("MPU_DASHBOARD_WEB_URL") or os.environ.get("MPU_DASHBOARD_WEB_URL") or ""
    )
    if configured:
        return configured.rstrip("/")
    host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
    return f"{request.scheme}://{host}:{DEFAULT_WEB_PORT}"


def node_modules_dir() -> Path:
    """Where hls.js is looked for: ``MPU_DASHBOARD_NODE_MODULES``, else ``build/dashboard/node_modules``
    of the source tree (where ``make dashboard-js`` installs it)."""
    configured = os.environ.get("MPU_DASHBOARD_NODE_MODULES", "").strip()
    if configured:
        return Path(configured)
    # The source tree's root: src/rtc_mpu/api/dashboard.py -> parents[3] (an editable install).
    return Path(__file__).resolve().parents[3] / NODE_MODULES


def _task_view(record: TaskRecord, web_url: str) -> dict[str, Any]:
    """One task as the page shows it: the REST status plus where its thumbnail, player and watch page
    are."""
    item = task_out(record)
    kinds = {str(o.get("kind")) for o in record.params.outputs}
    item["snapshot_url"] = (
        f"/dashboard/snapshot/{record.app_id}/{record.task_id}.jpg" if "snapshot" in kinds else None
    )
    item["hls_url"] = (
        f"/dashboard/hls/{record.app_id}/{record.task_id}/{HLS_PLAYLIST}" if "hls" in kinds else None
    )
    item["nginx_hls_url"] = (
        f"{web_url}/hls/{record.app_id}/{record.task_id}/{HLS_PLAYLIST}" if "hls" in kinds else None
    )
    item["watch_url"] = f"/dashboard/watch/{record.app_id}/{record.task_id}" if "rtc" in kinds else None
    return item


def _gather(
    store: TaskStoreProtocol, operator: bool
) -> tuple[list[TaskRecord], list[dict[str, Any]] | None, int | None]:
    """The active tasks this key sees; for operators the worker nodes and the queue length.

    Raises:
        StoreUnavailableError: Redis failed.
    """
    records = [r.as_seen(store.lease_seconds) for r in store.active_tasks() if _allows(r.app_id)]
    if not operator:
        return records, None, None
    active = {f"{r.app_id}/{r.task_id}" for r in records}
    nodes = []
    for node, units in sorted(store.node_loads().items()):
        entries = store.node_load(node)
        nodes.append(
            {
                "node": node,
                "load": round(units, 3),
                "capacity": store.node_capacity(node),
                "tasks": sorted(name for name in entries if name in active),
            }
        )
    return records, nodes, store.queue_length(QUEUE)


def _static(name: str, mimetype: str) -> Response:
    data = resources.files("rtc_mpu.api").joinpath("dashboard_static", name).read_bytes()
    response = Response(data, mimetype=mimetype)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/dashboard/dashboard.js")
def script() -> Response:
    """The page's script."""
    return _static("dashboard.js", "text/javascript")


@bp.get("/dashboard/")
def page() -> Response:
    """The dashboard page."""
    response = _static("index.html", "text/html")
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' blob:; media-src 'self' blob:; worker-src 'self' blob:; "
        "style-src 'self' 'unsafe-inline'; script-src 'self'; frame-ancestors 'none'"
    )
    return response


@bp.get("/dashboard/api/tasks")
def tasks() -> dict[str, Any]:
    """The page's data.

    ``{"operator", "apps" (the key's AppIds, null for operators), "tasks", "nodes", "queue_length",
    "csrf_token", "hls_js" (whether hls.js is installed), "generated_at"}``: tasks are the active tasks
    the key sees as ``GET /v1/apps/{app_id}/tasks/{task_id}`` shows them, plus ``snapshot_url``,
    ``hls_url``, ``nginx_hls_url`` and ``watch_url`` (null when the task has no such output); nodes
    (operators only, else null) are ``[{"node", "load", "capacity", "tasks"}]`` (tasks: the active
    tasks booked on it as ``app/task``; capacity: the node's units as its worker last reported them,
    0 = unlimited, null = not reported lately); queue_length:
    mix messages waiting in the Celery queue (operators only, else null).
    """
    operator = _is_operator()
    service = _service()
    records, nodes, queue = service.call_store(_gather, service.store, operator)
    web_url = _web_url()
    task_items = [_task_view(r, web_url) for r in sorted(records, key=lambda r: (r.app_id, r.task_id))]
    key = _key()
    return {
        "operator": operator,
        "apps": None if key is None or not key.app_ids else sorted(key.app_ids),
        "tasks": task_items,
        "nodes": nodes,
        "queue_length": queue,
        "csrf_token": csrf_token(key),
        "hls_js": (node_modules_dir() / HLS_JS).is_file(),
        "generated_at": time.time(),
    }


@bp.get("/dashboard/snapshot/<app_id>/<task_id>.jpg")
def snapshot(app_id: str, task_id: str) -> Response:
    """The task's latest snapshot (404 ``InvalidSnapshot.NotReady`` without one)."""
    jpeg, taken_at = _service().snapshot(app_id, task_id)
    response = Response(jpeg, mimetype="image/jpeg")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Snapshot-Taken-At"] = f"{taken_at:.3f}"
    return response


@bp.get("/dashboard/hls/<app_id>/<task_id>/<name>")
def hls(app_id: str, task_id: str, name: str) -> Response:
    """A file of the task's HLS output (playlist or segment) from ``MPU_HLS_DIR``."""
    problem = char_problem(name)
    if problem is not None:
        raise api_error(400, "InvalidParameter", f"name {problem}", "name")
    match = HLS_FILE.fullmatch(name)
    if match is None:
        raise api_error(404, "InvalidHls.NotFound", "no such HLS file")
    path = task_folder(hls_dir(), app_id, task_id) / name
    if not path.is_file():
        raise api_error(404, "InvalidHls.NotFound", f"no HLS file {name} for task {task_id} (yet)")
    response = send_file(path, mimetype=HLS_TYPES[match.group(1)], max_age=0)
    response.headers["Cache-Control"] = "no-cache, no-store"
    return response


@bp.get("/dashboard/vendor/hls.min.js")
def hls_js() -> Response:
    """hls.js as installed from npm by ``make dashboard-js``."""
    path = node_modules_dir() / HLS_JS
    if not path.is_file():
        raise api_error(404, "NotFound", "hls.js is not installed: run `make dashboard-js` (npm)")
    return send_file(path, mimetype="text/javascript", max_age=3600)


@bp.get("/dashboard/watch/<app_id>/<task_id>")
def watch(app_id: str, task_id: str) -> WerkzeugResponse:
    """A redirect to the stack's WebRTC watch page for the task's ``rtc`` output: with channel tokens
    configured (``MPU_TOKEN_SECRET``), a subscribe token of the task's channel for
    :data:`WATCH_TOKEN_SECONDS` is minted here (nothing is stored); else the page gets the AppId and
    ChannelId. ``MPU_DASHBOARD_JANUS_URL``: Janus' HTTP API as the viewer's browser reaches it (default:
    the watch page's own default, port 8088 of its host)."""
    record = _service().get_task(app_id, task_id)
    query: dict[str, str] = {"task": task_id}
    issuer: TokenIssuer = current_app.extensions["mpu_tokens"]
    if issuer.settings.secret is not None:
        key = _key()
        viewer = f"dashboard-{key.key_id}" if key is not None else "dashboard"
        if not USER_ID.fullmatch(viewer):
            viewer = "dashboard"
        issued = issuer.issue(app_id, record.params.channel_id, viewer, Role.SUBSCRIBE, WATCH_TOKEN_SECONDS)
        query["token"] = issued.token
    else:
        query.update(app=app_id, channel=record.params.channel_id)
    janus = os.environ.get("MPU_DASHBOARD_JANUS_URL", "").strip()
    if janus:
        query["janus"] = janus
    response = redirect(f"{_web_url()}/watch/?{urlencode(query)}", code=303)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/dashboard/api/apps/<app_id>/tasks/<task_id>/stop")
def stop(app_id: str, task_id: str) -> dict[str, Any]:
    """StopMPUTask from the page (CSRF-protected)."""
    _check_csrf()
    return task_out(_service().stop_task(app_id, task_id))


@bp.post("/dashboard/api/apps/<app_id>/tasks/<task_id>/layout")
def layout(app_id: str, task_id: str) -> dict[str, Any]:
    """UpdateMPULayout from the page (CSRF-protected): ``{"layout_ids": [1-16 LayoutIds]}``."""
    _check_csrf()
    body = request.get_json(silent=True)
    ids = body.get("layout_ids") if isinstance(body, dict) else None
    if (
        not isinstance(ids, list)
        or not 1 <= len(ids) <= 16
        or not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in ids)
    ):
        raise api_error(400, "InvalidParameter", "layout_ids must be a list of 1-16 LayoutIds", "layout_ids")
    return task_out(_service().update_task(app_id, task_id, {"layout_ids": ids}))
