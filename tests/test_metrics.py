"""``GET /metrics`` for operators: the task counts by state and status, the queue and node loads, read
from the real Redis; authenticated; never a StreamURL or a stream key."""

from __future__ import annotations

import base64

from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from rtc_mpu.api.app import create_app
from rtc_mpu.workers.model import TaskState, TaskStatus
from rtc_mpu.workers.stats import TaskStats
from tests.conftest import StoreFactory

AUTH = {"Authorization": "Basic " + base64.b64encode(b"k1:s1").decode()}
STREAM_KEY = "sk-metrics-9d8e7f"


def values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_tasks_and_show_no_stream_key(make_store: StoreFactory) -> None:
    store = make_store(lease_seconds=30)
    client: FlaskClient = create_app(
        {"MPU_ACCESS_KEYS": "k1:s1", "STORE": store, "ENQUEUE": lambda a, t: None}
    ).test_client()
    for task_id in ("t1", "t2", "t3"):
        body = {
            "task_id": task_id,
            "channel_id": "c",
            "stream_url": f"rtmp://h/live/{task_id}{STREAM_KEY}?k=x",
        }
        assert client.post("/v1/apps/a1/tasks", json=body, headers=AUTH).status_code == 201
    token = store.claim_on("a1", "t2", "host:1", node="node-a", cost=0.75, capacity=4).token
    assert token is not None
    store.heartbeat("a1", "t2", token, status=TaskStatus.RUNNING, stats=TaskStats(dropped_video_frames=7))
    client.delete("/v1/apps/a1/tasks/t3", headers=AUTH)

    assert client.get("/metrics").status_code == 403  # authenticated like the API
    answer = client.get("/metrics", headers=AUTH)
    assert answer.status_code == 200 and answer.mimetype == "text/plain"
    text = answer.get_data(as_text=True)
    assert STREAM_KEY not in text and "rtmp" not in text
    got = values(text)
    assert got[("mpu_tasks", (("state", "queued"),))] == 1
    assert got[("mpu_tasks", (("state", "starting"),))] == 1
    assert got[("mpu_tasks_by_status", (("status", "1"),))] == 1
    assert got[("mpu_tasks_by_status", (("status", "0"),))] == 1
    assert got[("mpu_task_dropped_video_frames", ())] == 7
    assert got[("mpu_node_load", (("node", "node-a"),))] == 0.75
    assert ("mpu_queue_length", ()) in got


def test_a_stopping_task_is_counted_as_stopping(make_store: StoreFactory) -> None:
    store = make_store(lease_seconds=30)
    client: FlaskClient = create_app(
        {"MPU_ACCESS_KEYS": "k1:s1", "STORE": store, "ENQUEUE": lambda a, t: None}
    ).test_client()
    body = {"task_id": "t1", "channel_id": "c", "stream_url": f"rtmp://127.0.0.1/live/{STREAM_KEY}"}
    assert client.post("/v1/apps/a1/tasks", json=body, headers=AUTH).status_code == 201
    token = store.claim("a1", "t1", "host:1")
    assert token is not None
    store.heartbeat("a1", "t1", token, status=TaskStatus.RUNNING, state=TaskState.RUNNING)
    assert client.delete("/v1/apps/a1/tasks/t1", headers=AUTH).get_json()["state"] == "stopping"
    got = values(client.get("/metrics", headers=AUTH).get_data(as_text=True))
    assert got[("mpu_tasks", (("state", "stopping"),))] == 1
    assert got[("mpu_tasks", (("state", "running"),))] == 0
    assert got[("mpu_tasks_by_status", (("status", "1"),))] == 1  # still pushing
