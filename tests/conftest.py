"""Shared fixtures: synthetic user clips (one colour and one tone per user), generated once per session,
the real servers (Redis, Janus, nginx-rtmp) and the test tiers.

Tiers: a test that needs a real server is marked ``integration`` (``make test-integration``); the others
are unit tests (``make test-unit``, ``pytest -m "not integration"``), which need no Redis, Janus,
nginx-rtmp or browser installed and take well under a minute. A test is marked here when it uses one of
:data:`SERVER_FIXTURES`, directly or through another fixture; a module that starts a server another way
(in the test's body, a subprocess) marks its tests itself, and so does one whose test runs a mix or
a retry loop paced in real time (seconds of wall clock each: test_overlays, test_pipeline_live,
test_sink_reconnect, test_janus_source), to keep the unit tier quick.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rtc_mpu.spec import urls
from rtc_mpu.stack.janus import Janus
from rtc_mpu.stack.nginx_rtmp import NginxRtmp
from rtc_mpu.stack.ports import free_port
from rtc_mpu.stack.redis import Redis
from rtc_mpu.workers.store import TaskStore
from tests.media import COLORS, TONES, write_test_clip

#: Fixtures that start a real server: these of this file, and those of test modules that start their own
#: (``private_nginx``, ``controllable_nginx``: test_sink_reconnect; ``stack``: test_faults; ``service``:
#: test_service_e2e, test_worker_recycle). The store fixtures (``make_store``, ``task_store``...) use
#: ``redis_server``, so they count through it.
SERVER_FIXTURES = frozenset(
    {
        "redis_server",
        "janus",
        "janus_tokens",
        "nginx_rtmp",
        "private_nginx",
        "controllable_nginx",
        "stack",
        "service",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``integration`` every test that uses a server fixture, directly or through other fixtures
    (``fixturenames`` is the closure of what the test requests)."""
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Nine 6-second 320x180 15 fps clips, user i in ``COLORS[i]`` with a ``TONES[i]`` tone."""
    folder = tmp_path_factory.mktemp("clips")
    return [
        write_test_clip(folder / f"user{i}.mp4", color=COLORS[i], tone_hz=TONES[i], seconds=6.0)
        for i in range(len(COLORS))
    ]


@pytest.fixture(scope="session")
def clip_4x3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 240x180 (4:3) clip in ``COLORS[0]`` without audio."""
    return write_test_clip(
        tmp_path_factory.mktemp("clip43") / "four_three.mp4",
        color=COLORS[0],
        tone_hz=None,
        width=240,
        height=180,
    )


@pytest.fixture(scope="session")
def nginx_rtmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxRtmp]:
    """A real nginx-rtmp (Debian packages) on free loopback ports; fails loudly if not installed."""
    server = NginxRtmp(tmp_path_factory.mktemp("nginx"), rtmp_port=free_port(), http_port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def janus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Janus]:
    """A real Janus (Debian package) with the VideoRoom plugin on a free loopback port."""
    server = Janus(tmp_path_factory.mktemp("janus"), http_port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


#: The shared token secret of :func:`janus_tokens` (Janus' ``token_auth_secret``, ``MPU_TOKEN_SECRET``).
TOKEN_SECRET = "test-token-secret-0123456789abcdef"


@pytest.fixture(scope="session")
def janus_tokens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Janus]:
    """A real Janus in signed-token mode (secret :data:`TOKEN_SECRET`): every request needs a token,
    rooms are created only with the admin key (the stack runs Janus like this)."""
    server = Janus(
        tmp_path_factory.mktemp("janus-tokens"),
        http_port=free_port(),
        rtp_port_range="43000-44999",
        token_secret=TOKEN_SECRET,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    """A real Redis (Debian redis-server) on a free loopback port, without persistence."""
    server = Redis(tmp_path_factory.mktemp("redis"), port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


#: Makes task stores (keyword arguments of :meth:`TaskStore.from_url`).
StoreFactory = Callable[..., TaskStore]


@pytest.fixture
def make_store(redis_server: Redis) -> Iterator[StoreFactory]:
    """Task stores on the real Redis, on their own clients, all under one key prefix unique to the
    test; the prefix's keys are deleted afterwards."""
    prefix = f"t{uuid.uuid4().hex}"
    stores: list[TaskStore] = []

    def make(**kwargs: Any) -> TaskStore:
        store = TaskStore.from_url(redis_server.url, prefix=prefix, **kwargs)
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
def task_store(make_store: StoreFactory) -> TaskStore:
    """A task store on the real Redis under a key prefix of its own, emptied afterwards."""
    return make_store()


class FakeDNS:
    """The resolver of StreamURL host names in in-process tests (no network): ``names`` answers
    first; else ``localhost`` is 127.0.0.1 and ::1, a name ending in ``.invalid`` does not resolve,
    and any other name has one address of its own in 198.18.0.0/15 (from a hash of the name)."""

    def __init__(self) -> None:
        self.names: dict[str, list[str]] = {"localhost": ["127.0.0.1", "::1"]}
        self.asked: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host in self.names:
            return list(self.names[host])
        if host.endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        number = int.from_bytes(hashlib.sha256(host.encode()).digest()[:4], "big") % (1 << 17)
        return [str(ipaddress.IPv4Address("198.18.0.0") + number)]


@pytest.fixture(autouse=True)
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    """Every test resolves StreamURL host names with a :class:`FakeDNS` (the service's default
    resolver, :func:`rtc_mpu.spec.urls.system_resolve`, is swapped); tests of real resolution call the
    function they imported."""
    resolver = FakeDNS()
    monkeypatch.setattr(urls, "system_resolve", resolver)
    return resolver
