"""The layout store against a real Redis: per-app ids from 100, exact round trips, validation before
any write, modify, paging and filters, concurrent creates, the delete-in-use rule (with real tasks of
the task store), the per-app limit, and a Redis that is down."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest

from rtc_mpu.api.service import MixService, ServiceError
from rtc_mpu.layouts import Layout, Pane, SpecError
from rtc_mpu.layouts.schema import MAX_AUDIO_MIX_COUNT
from rtc_mpu.spec.urls import stream_url_key
from rtc_mpu.stack.ports import free_port
from rtc_mpu.stack.redis import Redis
from rtc_mpu.workers.layout_store import (
    FIRST_CUSTOM_LAYOUT_ID,
    MAX_LAYOUTS_PER_APP,
    LayoutInUseError,
    LayoutLimitError,
    LayoutNotFoundError,
    LayoutStore,
)
from rtc_mpu.workers.model import (
    StoreError,
    StoreUnavailableError,
    TaskParams,
    TaskRecord,
    TaskState,
    TaskStatus,
)
from rtc_mpu.workers.store import FIRST_CUSTOM_LAYOUT_ID as STORE_FIRST_CUSTOM_LAYOUT_ID
from rtc_mpu.workers.store import TaskStore

StoreFactory = Callable[[], LayoutStore]

#: Two panes with coordinates that only survive an exact (repr) float round trip.
PANES: list[dict[str, Any]] = [
    {"id": 0, "x": 0.0, "y": 0.0, "width": 1.0, "height": 1.0, "zorder": 0},
    {"id": 1, "x": 2 / 3, "y": 0.1 + 0.2, "width": 1 / 3, "height": 0.7, "zorder": 2},
]


def one_pane(width: float = 1.0) -> list[dict[str, Any]]:
    return [{"id": 0, "x": 0, "y": 0, "width": width, "height": 1}]


@pytest.fixture
def prefix() -> str:
    """A key prefix unique to the test (shared by its layout and task stores)."""
    return f"t{uuid.uuid4().hex}"


@pytest.fixture
def make_store(redis_server: Redis, prefix: str) -> Iterator[StoreFactory]:
    """Layout stores on their own clients under the test's prefix; the test's keys are deleted after."""
    stores: list[LayoutStore] = []

    def make() -> LayoutStore:
        store = LayoutStore.from_url(redis_server.url, prefix=prefix)
        stores.append(store)
        return store

    yield make
    cleanup = stores[0] if stores else make()
    keys = list(cleanup.client.scan_iter(match=f"{prefix}:*"))
    if keys:
        cleanup.client.delete(*keys)
    for store in stores:
        store.close()


@pytest.fixture
def store(make_store: StoreFactory) -> LayoutStore:
    return make_store()


@pytest.fixture
def tasks(redis_server: Redis, prefix: str, make_store: StoreFactory) -> Iterator[TaskStore]:
    """The real task store under the same prefix (its keys are deleted by ``make_store``)."""
    task_store = TaskStore.from_url(redis_server.url, prefix=prefix)
    yield task_store
    task_store.close()


def start(tasks: TaskStore, task_id: str, layout_ids: tuple[int, ...], app_id: str = "app1") -> TaskRecord:
    url = f"rtmp://example.com/live/{app_id}-{task_id}"
    params = TaskParams("ch1", url, layout_ids=layout_ids)
    return tasks.start_task(TaskRecord(app_id, task_id, params, stream_url_key(url)))


def keys_of(store: LayoutStore) -> list[bytes]:
    return sorted(store.client.scan_iter(match=f"{store.prefix}:*"))


# -- create, get ---------------------------------------------------------------------------------


def test_ids_start_at_100_and_layouts_round_trip_exactly(store: LayoutStore) -> None:
    first = store.create("app1", name="two", panes=PANES, audio_mix_count=4, major_pane=0)
    second = store.create("app1", name="", panes=one_pane())
    third = store.create("app2", name="other app", panes=one_pane(0.5))

    assert (first.id, second.id, third.id) == (100, 101, 100)  # ids are per app
    assert FIRST_CUSTOM_LAYOUT_ID == 100
    assert first == Layout(
        id=100,
        name="two",
        panes=(
            Pane(0, 0.0, 0.0, 1.0, 1.0, 0),
            Pane(1, 2 / 3, 0.30000000000000004, 1 / 3, 0.7, 2),
        ),
        audio_mix_count=4,
        major_pane=0,
    )
    assert second.audio_mix_count == MAX_AUDIO_MIX_COUNT and second.major_pane is None  # the defaults
    assert second.panes == (Pane(0, 0.0, 0.0, 1.0, 1.0, 0),)
    assert store.get("app1", 100) == first  # floats exact, not rounded to 14 digits
    assert store.get("app1", 101) == second
    assert store.get("app2", 100) == third

    raw = store.client.hget(store.layouts_key("app1"), "100")
    assert raw is not None and json.loads(raw) == first.to_dict()
    assert json.loads(raw)["panes"][1]["y"] == 0.1 + 0.2
    assert store.client.get(store.seq_key("app1")) == b"101"


def test_ids_are_never_reused(store: LayoutStore) -> None:
    for _ in range(3):
        store.create("app1", name="x", panes=one_pane())
    store.delete("app1", 102)
    store.delete("app1", 100)
    assert store.create("app1", name="y", panes=one_pane()).id == 103
    store.delete("app1", 101)
    store.delete("app1", 103)
    assert store.list("app1") == (0, [])
    assert store.create("app1", name="z", panes=one_pane()).id == 104


@pytest.mark.parametrize(
    ("app_id", "kwargs", "code", "field"),
    [
        ("app1", {"name": "n" * 65}, "InvalidParameter", ("name",)),
        ("app1", {"name": 7}, "InvalidParameter", ("name",)),
        ("app1", {"panes": []}, "InvalidLayoutID.Malformed", ("panes",)),
        ("app1", {"panes": "panes"}, "InvalidLayoutID.Malformed", ("panes",)),
        (
            "app1",
            {"panes": [{"id": 0, "x": 0.5, "y": 0, "width": 0.6, "height": 1}]},
            "InvalidLayoutID.Malformed",
            ("panes", 0),
        ),
        ("app1", {"panes": [*one_pane(0.5), *one_pane(0.5)]}, "InvalidLayoutID.Malformed", ("panes",)),
        (
            "app1",
            {"panes": [{"id": 0, "x": 0, "y": 0, "width": 1}]},
            "InvalidLayoutID.Malformed",
            ("panes", 0),
        ),
        ("app1", {"audio_mix_count": 0}, "InvalidLayoutID.Malformed", ("audio_mix_count",)),
        ("app1", {"audio_mix_count": 17}, "InvalidLayoutID.Malformed", ("audio_mix_count",)),
        ("app1", {"major_pane": 3}, "InvalidLayoutID.Malformed", ("panes",)),
        ("", {}, "InvalidParameter", ("app_id",)),
        ("a:b", {}, "InvalidParameter", ("app_id",)),
        ("a/b", {}, "InvalidParameter", ("app_id",)),
    ],
)
def test_invalid_create_writes_nothing(
    store: LayoutStore, app_id: str, kwargs: dict[str, Any], code: str, field: tuple[str | int, ...]
) -> None:
    arguments: dict[str, Any] = {"name": "ok", "panes": PANES, **kwargs}
    with pytest.raises(SpecError) as caught:
        store.create(app_id, **arguments)
    assert caught.value.code == code
    assert caught.value.field == field
    assert keys_of(store) == []  # not even the id counter moved
    assert store.create("app1", name="n" * 64, panes=PANES).id == 100  # 64 characters are fine


@pytest.mark.parametrize(
    ("app_id", "layout_id"),
    [
        ("app1", 101),
        ("app1", 99),
        ("app1", 1),
        ("app1", True),
        ("app1", "100"),
        ("app2", 100),
        ("", 100),
        ("app1:layouts", 100),
        ("app1/x", 100),
    ],
)
def test_unknown_layouts_are_not_found(store: LayoutStore, app_id: str, layout_id: Any) -> None:
    store.create("app1", name="x", panes=one_pane())
    with pytest.raises(LayoutNotFoundError) as caught:
        store.get(app_id, layout_id)
    assert (caught.value.code, caught.value.http_status) == ("InvalidLayout.NotFound", 404)
    with pytest.raises(LayoutNotFoundError):
        store.modify(app_id, layout_id, name="y")
    with pytest.raises(LayoutNotFoundError):
        store.delete(app_id, layout_id)
    assert store.get("app1", 100).name == "x"


def test_corrupt_stored_layout_is_a_store_error(store: LayoutStore) -> None:
    store.client.hset(store.layouts_key("app1"), "100", '{"id":100,"panes":{}}')
    with pytest.raises(StoreError) as caught:
        store.get("app1", 100)
    assert not isinstance(caught.value, LayoutNotFoundError) and caught.value.http_status == 500


# -- modify ----------------------------------------------------------------------------------------


def test_modify_keeps_what_is_not_given(store: LayoutStore) -> None:
    store.create("app1", name="main", panes=PANES, audio_mix_count=4, major_pane=1)
    other = store.create("app1", name="other", panes=one_pane())

    renamed = store.modify("app1", 100, name="renamed")
    assert (renamed.id, renamed.name, renamed.audio_mix_count, renamed.major_pane) == (100, "renamed", 4, 1)
    assert renamed.panes == store.create("app1", name="copy", panes=PANES).panes

    new_panes = [{"id": 1, "x": 0.25, "y": 0.25, "width": 0.5, "height": 0.5}]
    moved = store.modify("app1", 100, panes=new_panes)  # replaces the panes and the major pane
    assert moved.panes == (Pane(1, 0.25, 0.25, 0.5, 0.5, 0),)
    assert (moved.name, moved.audio_mix_count, moved.major_pane) == ("renamed", 4, None)

    both = store.modify("app1", 100, audio_mix_count=2, major_pane=1)
    assert both == Layout(100, "renamed", moved.panes, 2, 1)
    assert store.get("app1", 100) == both
    assert store.get("app1", 101) == other  # untouched
    assert store.client.get(store.seq_key("app1")) == b"102"  # modify takes no id


@pytest.mark.parametrize(
    "kwargs",
    [
        {"panes": one_pane(), "major_pane": 1},  # major pane 1 is not one of the new panes
        {"name": "n" * 65},
        {"audio_mix_count": 99},
        {"panes": [{"id": 0, "x": 0.9, "y": 0, "width": 0.2, "height": 1}]},
        {"major_pane": 5},
    ],
)
def test_invalid_modify_writes_nothing(store: LayoutStore, kwargs: dict[str, Any]) -> None:
    created = store.create("app1", name="main", panes=PANES, audio_mix_count=4, major_pane=1)
    before = store.client.hget(store.layouts_key("app1"), "100")
    with pytest.raises(SpecError):
        store.modify("app1", 100, **kwargs)
    assert store.client.hget(store.layouts_key("app1"), "100") == before
    assert store.get("app1", 100) == created


# -- get_many, list --------------------------------------------------------------------------------


def test_get_many_in_one_round_trip(store: LayoutStore, monkeypatch: pytest.MonkeyPatch) -> None:
    made = [store.create("app1", name=f"l{i}", panes=one_pane()) for i in range(3)]
    store.delete("app1", 101)
    commands: list[str] = []
    real: Callable[..., Any] = store.client.execute_command

    def counting(*args: Any, **options: Any) -> Any:
        commands.append(str(args[0]))
        return real(*args, **options)

    monkeypatch.setattr(store.client, "execute_command", counting)
    found = store.get_many("app1", [1, 100, 101, 102, 102, 999, True, 13])
    assert found == {100: made[0], 102: made[2]}
    assert commands == ["HMGET"]
    assert store.get_many("app1", [1, 6, 13]) == {}  # only system ids: no round trip
    assert store.get_many("app2", [100]) == {}
    assert store.get_many("a:b", [100]) == {}
    assert commands == ["HMGET", "HMGET"]


def test_list_pages_filters_and_totals(store: LayoutStore) -> None:
    for i in range(25):
        store.create("app1", name="even" if i % 2 == 0 else "odd", panes=one_pane())
    store.create("app2", name="even", panes=one_pane())

    total, page = store.list("app1")
    assert total == 25 and [item.id for item in page] == list(range(100, 110))
    total, page = store.list("app1", page_num=3)
    assert total == 25 and [item.id for item in page] == list(range(120, 125))
    assert store.list("app1", page_num=4) == (25, [])
    total, page = store.list("app1", page_size=100)
    assert total == 25 and [item.id for item in page] == list(range(100, 125))

    total, page = store.list("app1", name="even", page_num=2, page_size=5)
    assert total == 13 and [item.id for item in page] == [110, 112, 114, 116, 118]
    assert store.list("app1", name="Even") == (0, [])  # exact match only
    assert store.list("app1", layout_id=107) == (1, [store.get("app1", 107)])
    assert store.list("app1", layout_id=107, name="odd") == (1, [store.get("app1", 107)])
    assert store.list("app1", layout_id=107, name="even") == (0, [])
    assert store.list("app1", layout_id=125) == (0, [])
    assert store.list("app1", layout_id=5) == (0, [])
    assert store.list("app1", layout_id=107, page_num=2) == (1, [])
    assert store.list("app2", name="even")[0] == 1
    assert store.list("nobody") == (0, [])
    assert store.list("a/b") == (0, [])


@pytest.mark.parametrize(
    "kwargs",
    [{"page_num": 0}, {"page_num": -1}, {"page_size": 0}, {"page_size": 101}, {"page_size": True}],
)
def test_list_refuses_bad_paging(store: LayoutStore, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        store.list("app1", **kwargs)


def test_concurrent_creates_get_distinct_ids(make_store: StoreFactory) -> None:
    stores = [make_store() for _ in range(4)]
    ids: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(stores))

    def run(store: LayoutStore, n: int) -> None:
        try:
            barrier.wait()
            for i in range(5):
                layout = store.create("app1", name=f"w{n}-{i}", panes=PANES)
                with lock:
                    ids.append(layout.id)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(store, n)) for n, store in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert sorted(ids) == list(range(100, 120))
    total, page = stores[0].list("app1", page_size=100)
    assert total == 20 and sorted(item.name for item in page) == sorted(
        f"w{n}-{i}" for n in range(4) for i in range(5)
    )


# -- delete ------------------------------------------------------------------------------------------


def test_delete_refused_while_an_active_task_lists_the_layout(store: LayoutStore, tasks: TaskStore) -> None:
    store.create("app1", name="used", panes=one_pane())
    store.create("app1", name="unused", panes=one_pane())
    start(tasks, "t1", (100,))
    start(tasks, "t2", (1, 100))
    start(tasks, "t3", (1, 6))

    with pytest.raises(LayoutInUseError) as caught:
        store.delete("app1", 100)
    assert (caught.value.code, caught.value.http_status) == ("InvalidLayout.InUse", 409)
    assert "t1" in caught.value.message and "t2" in caught.value.message
    assert "t3" not in caught.value.message
    assert sorted(caught.value.task_ids) == ["t1", "t2"] and caught.value.count == 2
    assert store.get("app1", 100).name == "used"  # still there

    store.delete("app1", 101)  # no task lists it
    with pytest.raises(LayoutNotFoundError):
        store.get("app1", 101)

    assert tasks.request_stop("app1", "t1").state is TaskState.ENDED  # unclaimed: ended at once
    with pytest.raises(LayoutInUseError) as caught:
        store.delete("app1", 100)
    assert caught.value.task_ids == ("t2",) and "t1" not in caught.value.message

    token = tasks.claim("app1", "t2", "w1")  # a running task blocks it too, until it finishes
    assert token is not None
    with pytest.raises(LayoutInUseError):
        store.delete("app1", 100)
    ended = tasks.finish("app1", "t2", token, TaskStatus.STOPPED, "done")
    assert ended is not None and not ended.active

    store.delete("app1", 100)  # ended tasks (still listed in the app's index) do not block
    with pytest.raises(LayoutNotFoundError):
        store.get("app1", 100)
    with pytest.raises(LayoutNotFoundError):
        store.delete("app1", 100)
    assert store.list("app1") == (0, [])


def test_other_apps_tasks_never_block_a_delete(store: LayoutStore, tasks: TaskStore) -> None:
    store.create("app1", name="mine", panes=one_pane())
    store.create("app2", name="theirs", panes=one_pane())
    store.create("app10", name="theirs too", panes=one_pane())  # a task may only name its app's own
    start(tasks, "t1", (100,), app_id="app2")
    start(tasks, "t9", (100,), app_id="app10")
    store.delete("app1", 100)
    with pytest.raises(LayoutInUseError):
        store.delete("app2", 100)


def test_in_use_message_names_at_most_five_tasks(store: LayoutStore, tasks: TaskStore) -> None:
    store.create("app1", name="popular", panes=one_pane())
    for i in range(7):
        start(tasks, f"task{i}", (100,))
    with pytest.raises(LayoutInUseError) as caught:
        store.delete("app1", 100)
    assert caught.value.count == 7 and len(caught.value.task_ids) == 5
    assert sum(f"task{i}" in caught.value.message for i in range(7)) == 5
    assert "2 more" in caught.value.message


# -- limit -------------------------------------------------------------------------------------------


def test_limit_per_app(store: LayoutStore) -> None:
    for _ in range(MAX_LAYOUTS_PER_APP):
        store.create("app1", name="x", panes=one_pane())
    with pytest.raises(LayoutLimitError) as caught:
        store.create("app1", name="one too many", panes=one_pane())
    assert (caught.value.code, caught.value.http_status) == ("InvalidLayout.LimitExceeded", 400)
    assert store.list("app1")[0] == MAX_LAYOUTS_PER_APP
    assert store.client.get(store.seq_key("app1")) == str(99 + MAX_LAYOUTS_PER_APP).encode()  # no id taken
    assert store.create("app2", name="other app", panes=one_pane()).id == 100
    store.delete("app1", 500)
    assert store.create("app1", name="room again", panes=one_pane()).id == 100 + MAX_LAYOUTS_PER_APP


# -- Redis down ----------------------------------------------------------------------------------------


def test_redis_down_is_store_unavailable_quickly() -> None:
    store = LayoutStore.from_url(f"redis://127.0.0.1:{free_port()}/0")
    calls: list[Callable[[], object]] = [
        lambda: store.create("app1", name="x", panes=one_pane()),
        lambda: store.modify("app1", 100, name="y"),
        lambda: store.delete("app1", 100),
        lambda: store.get("app1", 100),
        lambda: store.get_many("app1", [100, 101]),
        lambda: store.list("app1"),
        lambda: store.list("app1", layout_id=100),
    ]
    for call in calls:
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError) as caught:
            call()
        assert time.monotonic() - started < 3.0
        assert caught.value.http_status == 503
        assert "127.0.0.1" not in caught.value.message  # no internal address in what clients see
    store.close()


# -- issue 11, D7: deleting a layout while a task that names it starts or switches to it -------------


def service_on(tasks: TaskStore, layouts: Any) -> MixService:
    return MixService(lambda: tasks, lambda: layouts, lambda app_id, task_id: None)


class DeleteInTheWindow:
    """A layout store whose ``get_many`` lets a delete of the layouts it read land right after (the
    losing interleaving of the race, made certain); ``deleted`` says whether the delete succeeded."""

    def __init__(self, layouts: LayoutStore, other: LayoutStore) -> None:
        self.layouts, self.other = layouts, other
        self.deleted: bool | None = None

    def get_many(self, app_id: str, layout_ids: list[int]) -> dict[int, Layout]:
        found = self.layouts.get_many(app_id, layout_ids)
        try:
            for layout_id in found:
                self.other.delete(app_id, layout_id)
            self.deleted = True
        except LayoutInUseError:
            self.deleted = False
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self.layouts, name)


def task_body(task_id: str, layout_ids: list[int]) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "channel_id": "ch1",
        "stream_url": f"rtmp://127.0.0.1/live/{task_id}",
        "layout_ids": layout_ids,
    }


def test_a_delete_between_the_layout_check_and_the_start_refuses_the_start(
    make_store: StoreFactory, tasks: TaskStore
) -> None:
    layouts = make_store()
    layouts.create("app1", name="soon gone", panes=one_pane())
    window = DeleteInTheWindow(layouts, make_store())
    with pytest.raises(ServiceError) as caught:
        service_on(tasks, window).start_task("app1", task_body("t1", [100]))
    assert window.deleted is True
    assert (caught.value.status, caught.value.code, caught.value.field) == (
        400,
        "InvalidLayoutID.Malformed",
        ("layout_ids",),
    )
    assert tasks.active_tasks() == [] and layouts.list("app1") == (0, [])
    assert not list(tasks.client.scan_iter(match=f"{tasks.prefix}:lease:*"))


def test_a_delete_between_the_layout_check_and_an_update_refuses_the_update(
    make_store: StoreFactory, tasks: TaskStore
) -> None:
    layouts = make_store()
    layouts.create("app1", name="soon gone", panes=one_pane())
    stored = layouts.client.hget(layouts.layouts_key("app1"), "100")
    assert stored is not None
    service_on(tasks, layouts).start_task("app1", task_body("t1", [1]))
    window = DeleteInTheWindow(layouts, make_store())
    for update in ({"layout_ids": [100]}, {"layout_ids": [1, 100], "crop_mode": 1}):
        layouts.client.hset(layouts.layouts_key("app1"), "100", stored)
        with pytest.raises(ServiceError) as caught:
            service_on(tasks, window).update_task("app1", "t1", update)
        assert window.deleted is True
        assert (caught.value.status, caught.value.code) == (400, "InvalidLayoutID.Malformed")
        record = tasks.get_task("app1", "t1")
        assert record.params.layout_ids == (1,) and record.spec_version == 1


def test_the_task_store_checks_the_layout_store_key(make_store: StoreFactory, tasks: TaskStore) -> None:
    assert tasks.layouts_key("app1") == make_store().layouts_key("app1")
    assert STORE_FIRST_CUSTOM_LAYOUT_ID == FIRST_CUSTOM_LAYOUT_ID


def race_round(task_side: Callable[[], object], delete_side: Callable[[], object]) -> tuple[bool, bool]:
    """Run both sides at once (the delete after a random 0-4 ms, so that either may win); whether
    each succeeded."""
    barrier = threading.Barrier(2)
    result: dict[str, bool] = {}

    def run(name: str, side: Callable[[], object], delay: float) -> None:
        barrier.wait()
        time.sleep(delay)
        try:
            side()
            result[name] = True
        except ServiceError as exc:
            expected = "InvalidLayoutID.Malformed" if name == "task" else "InvalidLayout.InUse"
            assert exc.code == expected, exc.code
            result[name] = False

    threads = [
        threading.Thread(target=run, args=("task", task_side, 0.0)),
        threading.Thread(target=run, args=("delete", delete_side, random.uniform(0, 0.004))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return result["task"], result["delete"]


@pytest.mark.parametrize("kind", ["start", "update"])
def test_concurrent_task_and_delete_never_both_succeed(
    make_store: StoreFactory, redis_server: Redis, prefix: str, kind: str
) -> None:
    """The issue's reproduction, with threads on their own clients: 25 rounds of a StartMPUTask (or an
    UpdateMPULayout switching to the layout) against a DeleteMPULayout of that layout."""
    stores = [TaskStore.from_url(redis_server.url, prefix=prefix) for _ in range(2)]
    layouts = [make_store() for _ in range(2)]
    for task_store in stores:
        task_store.ping()
    for layout_store in layouts:
        layout_store.client.ping()
    tasking, deleting = service_on(stores[0], layouts[0]), service_on(stores[1], layouts[1])
    outcomes: list[tuple[bool, bool]] = []
    try:
        for round_ in range(25):
            layout_id = layouts[0].create("app1", name=f"r{round_}", panes=one_pane()).id
            if kind == "start":
                body = task_body(f"s{round_}", [layout_id])
                outcomes.append(
                    race_round(
                        partial(tasking.start_task, "app1", body),
                        partial(deleting.delete_layout, "app1", layout_id),
                    )
                )
            else:
                tasking.start_task("app1", task_body(f"u{round_}", [1]))
                change = {"layout_ids": [layout_id]}
                outcomes.append(
                    race_round(
                        partial(tasking.update_task, "app1", f"u{round_}", change),
                        partial(deleting.delete_layout, "app1", layout_id),
                    )
                )
            # Whatever won, no active task names a layout that is gone.
            for record in stores[0].active_tasks():
                custom = [i for i in record.params.layout_ids if i >= FIRST_CUSTOM_LAYOUT_ID]
                assert set(layouts[0].get_many("app1", custom)) == set(custom), (round_, record.task_id)
    finally:
        for task_store in stores:
            task_store.close()
    counts = {outcome: outcomes.count(outcome) for outcome in set(outcomes)}
    print(f"{kind} vs delete, (task ok, delete ok): {counts}")
    assert all(task != delete for task, delete in outcomes), counts  # exactly one of the two, every round
