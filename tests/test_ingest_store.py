"""Ingest records on a real Redis (rtc_mpu.workers.ingest_store) and the REST API's answers to bad
input (the API on the real store; no worker: queuing is recorded)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from rtc_mpu.spec.ingest import Control, IngestSpec, IngestState
from rtc_mpu.workers.ingest_store import IngestError, IngestStore
from rtc_mpu.workers.store import TaskStore
from tests.signing import api_client, basic_auth

pytestmark = pytest.mark.integration

SPEC = IngestSpec("film", "room1", "movie", "https://cdn.example.com/a.mp4?sig=secret")


@pytest.fixture
def ingests(task_store: TaskStore) -> IngestStore:
    return IngestStore(task_store.client, task_store.prefix, lease_seconds=0.3)


def test_create_refuses_an_active_duplicate_and_a_user_in_use_and_replaces_an_ended_one(
    ingests: IngestStore,
) -> None:
    record = ingests.create("app1", SPEC)
    assert (record.state, record.active, record.fence, record.position_ms) == (
        IngestState.STARTING,
        True,
        0,
        0,
    )
    with pytest.raises(IngestError) as caught:
        ingests.create("app1", SPEC)
    assert (caught.value.status, caught.value.code) == (409, "InvalidIngest.Exists")
    with pytest.raises(IngestError) as caught:
        ingests.create("app1", IngestSpec("film2", "room1", "movie", "media:x.mp4"))
    assert caught.value.code == "InvalidIngest.UserInUse"
    ingests.create("app1", IngestSpec("film3", "room2", "movie", "media:x.mp4"))  # another channel
    ingests.create("app2", IngestSpec("film2", "room1", "movie", "media:x.mp4"))  # another app
    assert [r.spec.ingest_id for r in ingests.list_app("app1")] == ["film", "film3"]
    assert ingests.stop("app1", "film").state is IngestState.ENDED, "never claimed: ends at once"
    again = ingests.create("app1", SPEC)
    assert again.state is IngestState.STARTING and again.active


def test_claim_heartbeat_controls_fencing_and_finish(ingests: IngestStore) -> None:
    ingests.create("app1", SPEC)
    token = ingests.claim("app1", "film", "w1:1", node="n1", capacity=1.0)
    assert isinstance(token, int)
    assert ingests.claim("app1", "film", "w2:2", node="n2") is None, "held by a live worker"
    progress = {
        "state": IngestState.PLAYING,
        "reason": "playing",
        "position_ms": 1500,
        "position_at": time.time(),
        "duration_ms": 60000,
        "volume": 100,
    }
    answer = ingests.heartbeat("app1", "film", token, progress, node="n1")
    assert answer == ({}, False)
    ingests.control("app1", "film", Control(IngestState.PAUSED))
    ingests.control("app1", "film", Control(position_seconds=30.0, volume_percent=50))
    answer = ingests.heartbeat("app1", "film", token, progress, node="n1")
    assert answer is not None
    control, stop = answer
    assert (control["state"], control["position_seconds"], control["volume"], control["version"]) == (
        "paused",
        30.0,
        50,
        2,
    )
    assert not stop
    record = ingests.get("app1", "film")
    assert (record.state, record.duration_ms, record.worker) == (IngestState.PLAYING, 60000, "w1:1")
    assert record.to_json()["url"] == "https://cdn.example.com/a.mp4", "query (a signature) redacted"
    # The worker dies: after the lease another claims it, with a new token; the old one is fenced out.
    time.sleep(0.35)
    assert ingests.stale() == [("app1", "film")]
    second = ingests.claim("app1", "film", "w2:2", node="n2")
    assert isinstance(second, int) and second > token
    assert ingests.get("app1", "film").restarts == 1
    assert ingests.heartbeat("app1", "film", token, progress) is None
    assert not ingests.finish("app1", "film", token, IngestState.ENDED, "old", {})
    ingests.stop("app1", "film")
    answer = ingests.heartbeat("app1", "film", second, progress, node="n2")
    assert answer is not None and answer[1], "the stop reaches the worker"
    assert ingests.finish("app1", "film", second, IngestState.ENDED, "stopped", {"position_ms": 2000})
    ended = ingests.get("app1", "film")
    assert (ended.state, ended.reason, ended.active, ended.position_ms) == (
        IngestState.ENDED,
        "stopped",
        False,
        2000,
    )
    with pytest.raises(IngestError) as caught:
        ingests.control("app1", "film", Control(IngestState.PLAYING))
    assert (caught.value.status, caught.value.code) == (409, "InvalidIngest.Ended")
    assert ingests.stale() == []
    assert ingests.client.ttl(ingests.record_key("app1", "film")) > 0, "an ended record expires"


def test_an_ingest_takes_capacity_on_its_node_with_the_tasks(ingests: IngestStore) -> None:
    for index in range(4):
        ingests.create("app1", IngestSpec(f"i{index}", "room1", f"u{index}", "media:x.mp4"))
    tokens = [
        ingests.claim("app1", f"i{index}", "w1:1", node="n1", capacity=1.0, cost=0.3) for index in range(4)
    ]
    assert [isinstance(t, int) for t in tokens] == [True, True, True, False]
    assert tokens[3] == "no_capacity"
    assert ingests.client.hlen(f"{ingests.prefix}:load:n1") == 3


def test_never_claimed_ingests_are_stale_after_a_while(ingests: IngestStore) -> None:
    ingests.create("app1", SPEC)
    assert ingests.stale(queued_after_seconds=60) == []
    assert ingests.stale(queued_after_seconds=0) == [("app1", "film")]


def test_the_api_refuses_bad_ingest_requests(task_store: TaskStore) -> None:
    queued: list[tuple[str, str]] = []
    client = api_client(
        task_store, "k1:s1", ENQUEUE_INGEST=lambda a, i: queued.append((a, i)), MPU_RATE_LIMIT=0
    )
    auth = basic_auth("k1", "s1")

    def call(method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        reply = client.open(f"/v1/apps/app1/ingests{path}", method=method, json=body, headers=auth)
        return reply.status_code, reply.get_json() or {}

    body = {"ingest_id": "film", "channel_id": "room1", "user_id": "movie", "url": "media:talk.mp4"}
    status, created = call("POST", "", body)
    assert status == 201 and created["state"] == "starting" and queued == [("app1", "film")]
    assert call("POST", "", body)[1]["code"] == "InvalidIngest.Exists"
    for change, code, field in (
        ({"url": "file:///etc/passwd"}, "InvalidIngest.Url", "url"),
        ({"url": "gopher://x.example.com/"}, "InvalidIngest.Url", "url"),
        ({"ingest_id": "a/b"}, "InvalidIngest.Id", "ingest_id"),
        ({"user_id": "t1.mix"}, "InvalidParameter", "user_id"),
        ({"volume": 900}, "InvalidParameter", "volume"),
        ({"channel_id": "room\u202e1"}, "InvalidParameter", "channel_id"),
    ):
        status, error = call("POST", "", {**body, "ingest_id": "other", **change})
        assert (status, error["code"], error["field"]) == (400, code, field), error
    assert call("POST", "", [1, 2])[0] == 400
    assert call("GET", "/nope")[1]["code"] == "InvalidIngest.NotFound"
    assert call("GET", "/bad%20id")[1]["field"] == "ingest_id"
    assert call("PATCH", "/film", {"state": "ended"})[0] == 400
    assert call("PATCH", "/film", {})[0] == 400
    status, _ = call("PATCH", "/film", {"state": "paused", "volume": 20})
    assert status == 200
    assert call("GET", "")[1]["ingests"][0]["ingest_id"] == "film"
    status, stopped = call("DELETE", "/film")
    assert (status, stopped["state"]) == (200, "ended")
    assert call("PATCH", "/film", {"state": "playing"})[1]["code"] == "InvalidIngest.Ended"
    assert call("DELETE", "/film")[0] == 200, "stopping an ended ingest: as it is"
    assert client.get("/v1/apps/app1/ingests", headers=basic_auth("k1", "wrong")).status_code == 403
    assert client.get("/v1/apps/app1/ingests").status_code in (401, 403)


def test_a_released_ingest_is_claimed_again_at_once_and_resumes_where_it_was(ingests: IngestStore) -> None:
    from rtc_mpu.workers.ingest_runner import resume_point

    ingests.create("app1", SPEC)
    first = ingests.claim("app1", "film", "w1:1", node="n1")
    assert isinstance(first, int)
    fresh = ingests.get("app1", "film")
    assert resume_point(fresh, time.time()) == (0.0, False), "the first claim starts at start_at"
    progress = {"state": IngestState.PLAYING, "position_ms": 10_000, "position_at": time.time() - 2.0}
    assert ingests.release("app1", "film", first, progress)
    assert ingests.client.hlen(f"{ingests.prefix}:load:n1") == 0, "its capacity is free"
    second = ingests.claim("app1", "film", "w2:2", node="n2")
    assert isinstance(second, int) and second > first, "no waiting for the lease"
    record = ingests.get("app1", "film")
    start, paused = resume_point(record, time.time())
    assert 11.9 < start < 12.5 and not paused, "where the audience is now: 10 s + 2 s"
    assert not ingests.release("app1", "film", first, progress), "the old claim cannot"
    paused_progress = {"state": IngestState.PAUSED, "position_ms": 5_000, "position_at": time.time() - 30}
    assert ingests.release("app1", "film", second, paused_progress)
    ingests.claim("app1", "film", "w3:3")
    assert resume_point(ingests.get("app1", "film"), time.time()) == (5.0, True), "paused stays put"
