"""The A/V offset of a task's participants (issue 17) in the task's stats and ``/metrics``, through the
real store: the largest offset and how many participants are out of EBU R37's limits, no user id."""

from __future__ import annotations

import base64

from flask.testing import FlaskClient

from rtc_mpu.api.app import create_app
from rtc_mpu.workers.model import TaskStatus
from rtc_mpu.workers.stats import TaskStats
from tests.conftest import StoreFactory
from tests.test_metrics import values

AUTH = {"Authorization": "Basic " + base64.b64encode(b"k1:s1").decode()}


def test_offsets_reach_the_task_view_and_the_metrics_without_user_ids(make_store: StoreFactory) -> None:
    store = make_store(lease_seconds=30)
    client: FlaskClient = create_app(
        {"MPU_ACCESS_KEYS": "k1:s1", "STORE": store, "ENQUEUE": lambda a, t: None}
    ).test_client()
    offsets = {"t1": {"alice": 3.5, "bob": -45.0}, "t2": {"carol": 72.0}}
    for task_id, reported in offsets.items():
        body = {"task_id": task_id, "channel_id": "c", "stream_url": f"rtmp://h/live/{task_id}"}
        assert client.post("/v1/apps/a1/tasks", json=body, headers=AUTH).status_code == 201
        token = store.claim_on("a1", task_id, "host:1", node="n", cost=0.5, capacity=4).token
        assert token is not None
        store.heartbeat(
            "a1", task_id, token, status=TaskStatus.RUNNING, stats=TaskStats(av_offsets_ms=reported)
        )

    task = client.get("/v1/apps/a1/tasks/t1", headers=AUTH).get_json()
    assert task["stats"]["av_offsets_ms"] == {"alice": 3.5, "bob": -45.0}
    text = client.get("/metrics", headers=AUTH).get_data(as_text=True)
    assert not any(user in text for user in ("alice", "bob", "carol")), "no user id in a label"
    got = values(text)
    assert got[("mpu_task_av_offset_max_ms", ())] == 72.0
    assert got[("mpu_task_av_out_of_sync", ())] == 2  # bob 45 ms early, carol 72 ms late; alice in sync
