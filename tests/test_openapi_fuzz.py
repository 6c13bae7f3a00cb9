"""Schemathesis fuzzes the REST API from its own OpenAPI document (/openapi.json), on a real Redis store:
no request gets a 5xx, and every answer is one the document describes (status code, content type,
headers, body schema); schema-invalid requests get a 4xx, so do requests without or with wrong
credentials, and undocumented methods get 405 with ``Allow``.

Every operation under /v1/apps is fuzzed with valid HTTP Basic credentials: once with generated path
parameters (mostly resources that do not exist), and the ones on a task or a layout once more on a task
and a custom layout that exist. The health check needs no fuzzing, and the RPC dialect at / is not in
the document (tests/test_rpc.py fuzzes it). Channel tokens are issued with a real Janus in token mode
(``janus_tokens``): a publish token's room and allowed list are made there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from apiflask import APIFlask
from hypothesis import HealthCheck, settings

from rtc_mpu.api.app import create_app
from rtc_mpu.stack.janus import Janus
from rtc_mpu.workers.store import TaskStore
from tests.conftest import TOKEN_SECRET
from tests.signing import basic_auth

KEY_ID, SECRET = "k1", "s1"
AUTH = basic_auth(KEY_ID, SECRET)
#: Examples per operation in the fuzzing phase (the examples and coverage phases add their own cases).
MAX_EXAMPLES = 40
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
#: A generated request.
Case = schemathesis.Case[Any]
#: The resources of the second run: its path parameters always name these.
APP, TASK, LAYOUT = "fuzz", "t1", 100

CONFIG: dict[str, Any] = {
    # Every generated request carries the credentials (the checks send some without, or with others).
    "auth": {"openapi": {"BasicAuth": {"username": KEY_ID, "password": SECRET}}},
    "checks": {
        # Missing credentials are answered 403 Forbidden, as the vendor's API does (documented); this
        # check insists on 401 for a missing Authorization header, and no setting changes that.
        "missing_required_header": {"enabled": False},
        # The API checks more than JSON Schema can say, so a schema-valid request may still get 400:
        # integers written 1.0 (JSON Schema calls them integers; the API's are strict), image URLs that
        # are not http(s) with a host, a StreamURL that is not rtmp(s)://host/app/stream, pane ids repeated
        # in a layout, an update that changes nothing, layout ids that do not exist...
        "positive_data_acceptance": {"enabled": False},
        # A schema-violating body larger than MAX_CONTENT_LENGTH is refused before it is parsed:
        # 413 RequestTooLarge (documented) is a rejection too.
        "negative_data_rejection": {
            "expected-statuses": ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "429"]
        },
    },
    "operations": [
        {
            # Unknown query parameters are ignored, as HTTP APIs commonly do and OpenAPI cannot forbid.
            # (Elsewhere, extra parameters are unknown keys of request bodies: those are refused, and
            # stay fuzzed.)
            "include-path": "/v1/apps/{app_id}/layouts",
            "include-method": "GET",
            "generation": {"allow-extra-parameters": False},
        }
    ],
}


class NoStore:
    """The store of the app that serves the document: using it is a mistake of this test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the document's app was called ({name}): pass app= to case.call")


def build_app(
    store: Any, janus_url: str = "http://127.0.0.1:9/janus"
) -> tuple[APIFlask, list[tuple[str, str]]]:
    """The API on ``store`` issuing channel tokens with the Janus at ``janus_url`` (in token mode: publish
    tokens are put on its rooms' lists), and the (app_id, task_id) of the mixes it queues."""
    queued: list[tuple[str, str]] = []
    app = create_app(
        {
            "MPU_ACCESS_KEYS": f"{KEY_ID}:{SECRET}",
            "STORE": store,
            "ENQUEUE": lambda a, t: queued.append((a, t)),
            "ENQUEUE_INGEST": lambda a, i: queued.append((a, i)),
            "MPU_RATE_LIMIT": 0,  # thousands of requests from one key: fuzz the API, not the limiter
            # The checks send many requests with wrong credentials from one address: no login throttle.
            "MPU_AUTH_FAILURE_LIMIT": 0,
            "MPU_TOKEN_SECRET": TOKEN_SECRET,
            "MPU_JANUS_URL": janus_url,
        }
    )
    return app, queued


def load_schema(config: dict[str, Any]) -> schemathesis.BaseSchema:
    """The app's document (the same whatever the store), without the health check.

    Loaded at import, so that each operation is a test of its own (``schemathesis.pytest.from_fixture``
    could use the app of a fixture, but it sets ``Node._nodeid``, which pytest 9 no longer has); the
    cases go to the app of the fixture ``api`` (``app=``).
    """
    app, _ = build_app(NoStore())
    loaded = schemathesis.openapi.from_wsgi(
        "/openapi.json", app, config=schemathesis.Config.from_dict(config)
    )
    return loaded.exclude(path="/v1/health")


schema = load_schema(CONFIG)
# The operations on a task or a layout. (Not include(): with an [[operations]] entry in the config,
# schemathesis ORs an include with one that matches everything.)
existing = load_schema(
    {**CONFIG, "parameters": {"app_id": APP, "task_id": TASK, "layout_id": LAYOUT}}
).exclude(path_regex=r"^/v1/apps/\{app_id\}/(tasks|layouts)$")


@dataclass
class Api:
    """The app under test on the real Redis store, the mixes it queued, and how many requests it got
    with the credentials."""

    store: TaskStore
    janus: Janus
    app: APIFlask = field(init=False)
    queued: list[tuple[str, str]] = field(init=False)
    authenticated: int = 0

    def __post_init__(self) -> None:
        self.app, self.queued = build_app(self.store, self.janus.url)

    def check(self, case: Case) -> None:
        """Send ``case``, validate the answer, and check that a started task was queued."""
        response = case.call_and_validate(app=self.app)
        self.authenticated += response.request.headers.get("Authorization") == AUTH["Authorization"]
        if case.method == "POST" and case.path == "/v1/apps/{app_id}/tasks" and response.status_code == 201:
            started = response.json()
            assert (started["app_id"], started["task_id"]) in self.queued


@pytest.fixture
def api(task_store: TaskStore, janus_tokens: Janus) -> Iterator[Api]:
    api = Api(task_store, janus_tokens)
    yield api
    # Else every answer could be a documented 403, and nothing be tested.
    assert api.authenticated, "no request carried the credentials: see CONFIG['auth']"


@pytest.fixture
def api_with_resources(api: Api) -> Api:
    """The app with custom layout LAYOUT of APP, and task TASK running in it."""
    client = api.app.test_client()
    panes = [{"pane_id": 0, "x": 0, "y": 0, "width": 1, "height": 1}]
    answer = client.post(f"/v1/apps/{APP}/layouts", json={"name": "one", "panes": panes}, headers=AUTH)
    assert answer.status_code == 201 and answer.json is not None and answer.json["layout_id"] == LAYOUT
    task = {
        "task_id": TASK,
        "channel_id": "c1",
        "stream_url": "rtmp://127.0.0.1/live/fuzz",
        "layout_ids": [LAYOUT],
    }
    answer = client.post(f"/v1/apps/{APP}/tasks", json=task, headers=AUTH)
    assert answer.status_code == 201, answer.json
    return api


@schema.parametrize()
@FUZZ_SETTINGS
def test_no_request_gets_a_server_error(case: Case, api: Api) -> None:
    api.check(case)


@existing.parametrize()
@FUZZ_SETTINGS
def test_no_request_on_existing_resources_gets_a_server_error(case: Case, api_with_resources: Api) -> None:
    api_with_resources.check(case)
