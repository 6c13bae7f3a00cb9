"""The one typed store interface (issue 12): the real stores satisfy the protocols (checked by mypy
here), one default lease for the store and the workers, the Lua scripts are package data, and what
``/metrics`` asks the store for (node loads, queue length) instead of reading its keys."""

from __future__ import annotations

import uuid
from importlib import resources

import pytest

from rtc_mpu.spec.urls import stream_url_key
from rtc_mpu.workers.layout_store import LayoutStore
from rtc_mpu.workers.model import TaskParams, TaskRecord
from rtc_mpu.workers.settings import WorkerSettings
from rtc_mpu.workers.store import TaskStore, load_script, redis_client
from rtc_mpu.workers.store_protocol import (
    DEFAULT_COOLDOWN_SECONDS,
    DEFAULT_LEASE_SECONDS,
    LayoutStoreProtocol,
    TaskStoreProtocol,
)
from tests.conftest import StoreFactory

SCRIPTS = {
    "prelude.lua",
    "ingest_create.lua",
    "ingest_claim.lua",
    "ingest_heartbeat.lua",
    "ingest_finish.lua",
    "ingest_control.lua",
    "ingest_release.lua",
    "start.lua",
    "claim.lua",
    "heartbeat.lua",
    "finish.lua",
    "release.lua",
    "request_stop.lua",
    "update_params.lua",
    "set_outputs.lua",
    "list_app.lua",
    "list_active.lua",
    "rescue_queued.lua",
    "layout_create.lua",
    "layout_modify.lua",
    "layout_delete.lua",
    "ping.lua",
    "outbox_ack.lua",
    "outbox_lock.lua",
    "outbox_unlock.lua",
    "recording_ready.lua",
}


def test_the_real_stores_implement_the_protocols(task_store: TaskStore) -> None:
    tasks: TaskStoreProtocol = task_store  # mypy checks every method's signature
    layouts: LayoutStoreProtocol = LayoutStore(task_store.client, prefix=task_store.prefix)
    assert tasks.prefix == task_store.prefix and layouts.get_many("app1", [100]) == {}


def test_one_default_lease_and_cooldown_for_the_store_and_the_workers() -> None:
    store = TaskStore(redis_client("redis://127.0.0.1:1/0"))  # no connection is made
    settings = WorkerSettings(capacity=1.0)
    assert store.lease_seconds == settings.lease_seconds == DEFAULT_LEASE_SECONDS == 8.0
    assert store.cooldown_seconds == settings.cooldown_seconds == DEFAULT_COOLDOWN_SECONDS == 10.0
    assert TaskStore.from_url("redis://127.0.0.1:1/0").lease_seconds == DEFAULT_LEASE_SECONDS


def test_the_lua_scripts_are_package_data() -> None:
    folder = resources.files("rtc_mpu.workers").joinpath("lua")
    assert {entry.name for entry in folder.iterdir() if entry.name.endswith(".lua")} == SCRIPTS
    claim = load_script("claim.lua", prelude=True)
    assert claim.startswith(load_script("prelude.lua")) and claim.endswith(load_script("claim.lua"))
    assert "local function end_task" in claim and "local function" not in load_script("claim.lua")
    with pytest.raises(FileNotFoundError):
        load_script("nope.lua")


def test_node_loads_and_queue_length(make_store: StoreFactory) -> None:
    store = make_store()
    assert store.node_loads() == {}
    for task_id in ("a", "b", "c"):
        url = f"rtmp://example.com/live/{task_id}"
        store.start_task(TaskRecord("app1", task_id, TaskParams("ch1", url), stream_url_key(url)))
    assert store.claim_on("app1", "a", "w1", node="n1", cost=0.5, capacity=4.0).token is not None
    assert store.claim_on("app1", "b", "w2", node="n1", cost=0.25, capacity=4.0).token is not None
    assert store.claim_on("app1", "c", "w3", node="n2", cost=1.5, capacity=4.0).token is not None
    assert store.node_loads() == {"n1": 0.75, "n2": 1.5}
    queue = f"q{uuid.uuid4().hex}"
    assert store.queue_length(queue) == 0
    store.client.rpush(queue, "m1", "m2")
    try:
        assert store.queue_length(queue) == 2
    finally:
        store.client.delete(queue)
