"""``MPU_LOG_FORMAT=json``: one JSON object per line, task and app ids, stream keys redacted, controls
escaped as in the text format."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from rtc_mpu.logs import JsonFormatter, SafeFormatter, configure_logging, logging_task, redact_urls

STREAM_KEY = "k3yS3cret"
MPU = [sys.executable, "-m", "rtc_mpu.cli.main"]


def record(msg: str, *args: Any, **extra: Any) -> logging.LogRecord:
    made = logging.LogRecord("rtc_mpu.workers.mix_runner", logging.INFO, __file__, 1, msg, args or None, None)
    made.__dict__.update(extra)
    return made


def formatted(made: logging.LogRecord) -> dict[str, Any]:
    line = JsonFormatter().format(made)
    assert "\n" not in line and "\r" not in line and "\u2028" not in line
    entry: dict[str, Any] = json.loads(line)
    return entry


def test_a_record_is_one_json_object_with_its_fields() -> None:
    entry = formatted(record("task %s/%s ended: %s (%s)", "app1", "t1", "STOPPED_BY_USER", "stopped"))
    assert set(entry) == {"time", "level", "logger", "message", "app_id", "task_id"}
    assert entry["level"] == "INFO" and entry["logger"] == "rtc_mpu.workers.mix_runner"
    assert entry["message"] == "task app1/t1 ended: STOPPED_BY_USER (stopped)"
    assert (entry["app_id"], entry["task_id"]) == ("app1", "t1")
    assert entry["time"].endswith("Z") and entry["time"][10] == "T" and len(entry["time"]) == 24


@pytest.mark.parametrize(
    ("made", "ids"),
    [
        (record("task %s/%s: output %s removed", "a", "t", "o2"), ("a", "t")),
        (record("HLS of task %s/%s removed (ended, no retention)", "a", "t"), ("a", "t")),
        (record("task %s: gave up after %d restarts", "a/t", 5), ("a", "t")),
        (record("a plain message", app_id="a", task_id="t"), ("a", "t")),
        (record("task %s/%s", "a", "t", task_id="other"), (None, "other")),  # extra= wins
        (record("heartbeat failed (%s); the mix goes on", "x"), (None, None)),
        (record("task %s: no slash", "t"), (None, None)),
    ],
)
def test_task_and_app_ids(made: logging.LogRecord, ids: tuple[str | None, str | None]) -> None:
    entry = formatted(made)
    assert (entry.get("app_id"), entry.get("task_id")) == ids


def test_a_mix_process_names_its_task_on_records_that_name_none() -> None:
    plain = record("user %s joined", "user1")
    assert "task_id" not in formatted(plain)
    with logging_task("app1", "t1"):
        assert (formatted(plain)["app_id"], formatted(plain)["task_id"]) == ("app1", "t1")
        with logging_task("app2", "t2"):
            assert formatted(plain)["task_id"] == "t2"
        assert formatted(plain)["task_id"] == "t1"
        # A record naming its own task keeps it.
        assert formatted(record("task %s/%s ended", "a", "other"))["task_id"] == "other"
    assert "task_id" not in formatted(plain)


def test_values_are_escaped_and_stream_keys_redacted() -> None:
    entry = formatted(
        record(
            "task %s/%s: push to %s failed: %s",
            "app\n1",
            "t\u202e1",
            f"rtmp://user:pw@cdn.example.com/live/{STREAM_KEY}?auth=tok",
            f"refused (rtmps://cdn.example.com:443/app/{STREAM_KEY}).",
        )
    )
    assert entry["message"] == (
        "task app\\n1/t\\u202e1: push to rtmp://cdn.example.com/live/k3y*** failed: "
        "refused (rtmps://cdn.example.com:443/app/k3y***)."
    )
    assert entry["app_id"] == "app\\n1" and entry["task_id"] == "t\\u202e1"
    line = JsonFormatter().format(record("url %s", f"rtmp://h/live/{STREAM_KEY}"))
    assert STREAM_KEY not in line and "pw" not in json.dumps(entry)
    # A message without arguments is escaped whole, as SafeFormatter does.
    assert formatted(record("forged\nINFO x\x00"))["message"] == "forged\\nINFO x\\x00"
    assert redact_urls("already rtmp://h/live/k3y***") == "already rtmp://h/live/k3y***"


def test_tracebacks_are_one_field() -> None:
    try:
        raise ValueError(f"boom\nINFO forged rtmp://h/live/{STREAM_KEY}")
    except ValueError as error:
        made = record("task %s/%s failed", "a", "t")
        made.exc_info = (type(error), error, error.__traceback__)
    entry = formatted(made)
    assert entry["message"] == "task a/t failed"
    assert entry["exc_info"].startswith("Traceback (most recent call last):\n")
    assert entry["exc_info"].endswith("ValueError: boom\\nINFO forged rtmp://h/live/k3y***")


def test_configure_logging_picks_the_format(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    try:
        for env, wanted in (
            ("json", JsonFormatter),
            ("JSON", JsonFormatter),
            ("text", SafeFormatter),
            (None, SafeFormatter),
        ):
            root.handlers = []
            if env is None:
                monkeypatch.delenv("MPU_LOG_FORMAT", raising=False)
            else:
                monkeypatch.setenv("MPU_LOG_FORMAT", env)
            configure_logging("info")
            (handler,) = root.handlers
            assert type(handler.formatter) is wanted
        assert isinstance(handler, logging.StreamHandler)
        root.handlers = []
        configure_logging("info", "json")
        (handler,) = root.handlers
        assert isinstance(handler, logging.StreamHandler)
        stream = io.StringIO()
        handler.setStream(stream)
        logging.getLogger("x").info("task %s/%s", "a", "t")
        assert json.loads(stream.getvalue())["task_id"] == "t"
        warnings.warn("careful", UserWarning, stacklevel=1)  # captured: a JSON line too
        warned = json.loads(stream.getvalue().splitlines()[-1])
        assert warned["logger"] == "py.warnings" and "UserWarning: careful" in warned["message"]
        root.handlers = []
        with pytest.raises(ValueError, match="MPU_LOG_FORMAT"):
            configure_logging("info", "xml")
    finally:
        logging.captureWarnings(False)
        root.handlers, root.level = saved, level


@pytest.fixture
def api_url() -> Iterator[str]:
    """An API that answers every GET with a task whose reason carries a control character."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = json.dumps({"task_id": "t1", "state": "running", "status": 1, "reason": "a\nb"}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_an_mpu_process_logs_json_lines(api_url: str, tmp_path: Any) -> None:
    env = {
        **os.environ,
        "MPU_LOG_FORMAT": "json",
        "MPU_API_URL": api_url,
        "MPU_ACCESS_KEY": "ak:the-secret",
        "MPU_RUN_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [*MPU, "--log-level", "DEBUG", "task", "status", "--app", "a1", "--task", "t1", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    entries = [json.loads(line) for line in lines]  # every line of the log is one JSON object
    (call,) = [e for e in entries if e["logger"] == "mpu.task"]
    assert call["message"].startswith("GET /v1/apps/a1/tasks/t1: HTTP 200 in ")
    assert (call["app_id"], call["task_id"]) == ("a1", "t1")
    assert "the-secret" not in done.stderr + done.stdout
