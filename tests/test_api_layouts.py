"""REST layouts (/v1/apps/<app>/layouts) and UpdateMPUTask (PATCH /v1/apps/<app>/tasks/<id>) on a real
Redis store, through the same service as the RPC dialect."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from flask.testing import FlaskClient

from rtc_mpu.api.app import create_app
from rtc_mpu.workers.store import TaskStore

AUTH = {"Authorization": "Basic " + base64.b64encode(b"k1:s1").decode()}
HALVES = [
    {"pane_id": 0, "x": 0, "y": 0, "width": 0.5, "height": 1},
    {"pane_id": 1, "x": 0.5, "y": 0, "width": 0.5, "height": 1, "z_order": 1, "major_pane": 1},
]


@pytest.fixture
def client(task_store: TaskStore) -> FlaskClient:
    app = create_app({"MPU_ACCESS_KEYS": "k1:s1", "STORE": task_store, "ENQUEUE": lambda a, t: None})
    return app.test_client()


def call(client: FlaskClient, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    response = client.open(path, method=method, json=body, headers=AUTH)
    return response.status_code, response.get_json(silent=True)


def test_layout_crud(client: FlaskClient) -> None:
    status, created = call(client, "POST", "/v1/apps/a1/layouts", {"name": "halves", "panes": HALVES})
    assert status == 201, created
    assert created["layout_id"] == 100 and created["audio_mix_count"] == 16
    assert [p["major_pane"] for p in created["panes"]] == [0, 1] and created["panes"][1]["z_order"] == 1
    status, second = call(client, "POST", "/v1/apps/a1/layouts", {"name": "one", "panes": HALVES[:1]})
    assert status == 201 and second["layout_id"] == 101

    status, page = call(client, "GET", "/v1/apps/a1/layouts?page_size=1&page_num=2")
    assert status == 200 and (page["total_num"], page["total_page"]) == (2, 2)
    assert [layout["layout_id"] for layout in page["layouts"]] == [101]
    status, page = call(client, "GET", "/v1/apps/a1/layouts?name=halves")
    assert [layout["layout_id"] for layout in page["layouts"]] == [100]
    status, page = call(client, "GET", "/v1/apps/other/layouts")
    assert page["total_num"] == 0  # layouts belong to their AppId

    status, changed = call(client, "PATCH", "/v1/apps/a1/layouts/100", {"audio_mix_count": 1})
    assert status == 200 and changed["audio_mix_count"] == 1 and changed["name"] == "halves"
    status, got = call(client, "GET", "/v1/apps/a1/layouts/100")
    assert got == changed
    status, system = call(client, "GET", "/v1/apps/a1/layouts/6")
    assert status == 200 and len(system["panes"]) == 4

    response = client.delete("/v1/apps/a1/layouts/100", headers=AUTH)
    assert response.status_code == 204
    status, error = call(client, "GET", "/v1/apps/a1/layouts/100")
    assert (status, error["code"]) == (404, "InvalidLayout.NotFound")


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"panes": HALVES}, "MissingParameter", "name"),
        ({"name": "x", "panes": []}, "InvalidParameter", "panes"),
        ({"name": "x", "panes": [{**HALVES[0], "x": 0.9}]}, "InvalidLayoutID.Malformed", "panes.0"),
        ({"name": "x", "panes": [{**HALVES[0], "width": 0}]}, "InvalidParameter", "panes.0.width"),
        ({"name": "x", "panes": [HALVES[0], HALVES[0]]}, "InvalidLayoutID.Malformed", "panes"),
        ({"name": "x", "panes": [{**p, "major_pane": 1} for p in HALVES]}, "InvalidParameter", "panes"),
        ({"name": "x", "panes": HALVES, "audio_mix_count": 0}, "InvalidParameter", "audio_mix_count"),
    ],
)
def test_bad_layouts(client: FlaskClient, body: dict[str, Any], code: str, field: str) -> None:
    status, error = call(client, "POST", "/v1/apps/a1/layouts", body)
    assert (status, error["code"], error["field"]) == (400, code, field), error
    assert call(client, "GET", "/v1/apps/a1/layouts")[1]["total_num"] == 0


def test_a_task_uses_a_copy_and_holds_its_layout(client: FlaskClient, task_store: TaskStore) -> None:
    _, created = call(client, "POST", "/v1/apps/a1/layouts", {"name": "halves", "panes": HALVES})
    layout_id = created["layout_id"]
    task = {"task_id": "t1", "channel_id": "c", "stream_url": "rtmp://h/live/s", "layout_ids": [1, layout_id]}
    status, started = call(client, "POST", "/v1/apps/a1/tasks", task)
    assert status == 201, started
    copy = task_store.get_task("a1", "t1").params.custom_layouts
    assert [c["id"] for c in copy] == [layout_id] and copy[0]["panes"][1]["x"] == 0.5

    status, error = call(client, "DELETE", f"/v1/apps/a1/layouts/{layout_id}")
    assert (status, error["code"]) == (409, "InvalidLayout.InUse") and "t1" in error["message"]
    # Another app's layout of the same id does not exist for a1's tasks.
    status, error = call(client, "POST", "/v1/apps/a2/tasks", {**task, "stream_url": "rtmp://h/live/s2"})
    assert (status, error["code"]) == (400, "InvalidLayoutID.Malformed")

    call(client, "DELETE", "/v1/apps/a1/tasks/t1")
    assert client.delete(f"/v1/apps/a1/layouts/{layout_id}", headers=AUTH).status_code == 204


def test_update_task_changes_overlays_and_subscriptions(client: FlaskClient, task_store: TaskStore) -> None:
    task = {"task_id": "t1", "channel_id": "c", "stream_url": "rtmp://h/live/s", "media_encode": 20}
    assert call(client, "POST", "/v1/apps/a1/tasks", task)[0] == 201
    change = {
        "sub_spec_users": ["alice", "bob"],
        "watermarks": [{"url": "https://example.com/logo.png", "alpha": 0.5, "width": 0.1, "height": 0.1}],
        "media_encode": 20,
    }
    status, updated = call(client, "PATCH", "/v1/apps/a1/tasks/t1", change)
    assert status == 200, updated
    assert updated["ignored"] == []  # subscriptions and watermarks are applied
    params = task_store.get_task("a1", "t1").params
    assert params.sub_spec_users == ("alice", "bob") and params.watermarks[0]["alpha"] == 0.5
    assert params.watermarks[0]["x"] == 0.0 and params.watermarks[0]["display"] == 1  # defaults filled in
    status, error = call(client, "PATCH", "/v1/apps/a1/tasks/t1", {"media_encode": 27})
    assert (status, error["code"], error["field"]) == (400, "InvalidMediaEncode.Malformed", "media_encode")
    status, error = call(client, "PATCH", "/v1/apps/a1/tasks/t1", {})
    assert (status, error["code"]) == (400, "MissingParameter")
