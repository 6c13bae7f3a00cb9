"""``mpu task``: argument parsing, table and JSON output, exit codes, against a fake API (a scripted
HTTP server in a thread)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from rtc_mpu.cli import task as task_cli
from rtc_mpu.cli.main import build_parser
from rtc_mpu.stack.ports import free_port

KEY, SECRET = "ak1", "s3cr3t-value"
#: The stream key a task's StreamURL holds: never printed.
STREAM_KEY = "supersecretstreamkey"
CLEAR_URL = f"rtmp://cdn.example.com/live/{STREAM_KEY}?auth=tok"


def task(state: str, status: int, reason: str = "", **extra: Any) -> dict[str, Any]:
    """A task as the API answers it (but with its StreamURL in clear, which the CLI redacts anyway)."""
    return {
        "app_id": "app1",
        "task_id": "t1",
        "channel_id": "room1",
        "stream_url": CLEAR_URL,
        "status": status,
        "status_text": {0: "waiting", 1: "running", 3: "stopped by the user"}.get(status, "other"),
        "state": state,
        "reason": reason,
        "worker": "mix@host" if state != "queued" else None,
        "restarts": 0,
        "layout_id": 2,
        "layout_ids": [1, 2],
        "users": ["user1", "user2"],
        "stats": {"fps": 30.0},
        "outputs": [
            {"output_id": "o1", "kind": "rtmp", "url": CLEAR_URL, "state": "connected", "error": None}
        ],
        "ignored": [],
        "created_at": 1.0,
        "updated_at": 2.0,
        "ended_at": None,
        **extra,
    }


@dataclass
class Request:
    method: str
    path: str
    body: Any
    authorization: str | None


@dataclass
class FakeApi:
    """Answers ``(method, path)`` with the next scripted ``(status, body)`` (the last one repeats) and
    keeps every request; ``delay`` seconds before each answer."""

    routes: dict[tuple[str, str], list[tuple[int, Any]]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    delay: float = 0.0
    url: str = ""

    def script(self, method: str, path: str, *answers: tuple[int, Any]) -> None:
        self.routes[(method, path)] = list(answers)

    def answer(self, method: str, path: str, body: Any, authorization: str | None) -> tuple[int, Any]:
        self.requests.append(Request(method, path, body, authorization))
        answers = self.routes.get((method, path))
        if not answers:
            return 404, {"code": "NotFound", "message": "no such route", "request_id": "r0"}
        return answers.pop(0) if len(answers) > 1 else answers[0]


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApi]:
    fake = FakeApi()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            time.sleep(fake.delay)
            status, body = fake.answer(
                self.command, self.path, json.loads(raw) if raw else None, self.headers.get("Authorization")
            )
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_DELETE = _serve  # noqa: N815 (http.server's names)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("MPU_API_URL", fake.url)
    monkeypatch.setenv("MPU_ACCESS_KEY", f"{KEY}:{SECRET}")
    monkeypatch.setattr(task_cli, "POLL_INTERVAL", 0.02)
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def mpu(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``mpu task ...``; returns (exit code, stdout, stderr), checking neither holds a secret."""
    args = build_parser("task").parse_args(["task", *argv])
    code: int = args.func(args)
    out, err = capsys.readouterr()
    for text in (out, err):
        assert SECRET not in text and STREAM_KEY not in text and "auth=tok" not in text, text
    return code, out, err


# --- parsing ---------------------------------------------------------------------------------------


def test_start_options_parse_into_the_request_fields() -> None:
    args = build_parser("task").parse_args(
        [
            "task",
            "start",
            "--app",
            "app1",
            "--task",
            "t1",
            "--channel",
            "room1",
            "--stream-url",
            CLEAR_URL,
            "--layout-ids",
            "1,2",
            "--media-encode",
            "27",
            "--output",
            "record:format=mp4,max_duration_seconds=600",
            "--output",
            "rtmp:url=rtmp://b.example.com/live/k=1",
            "--set",
            "crop_mode=2",
            "--set",
            'sub_spec_users=["alice"]',
            "--set",
            "task_profile=4IN_720P",
        ]
    )
    assert args.layout_ids == [1, 2] and args.media_encode == 27 and args.timeout == 60
    assert args.outputs == [
        {"kind": "record", "format": "mp4", "max_duration_seconds": 600},
        {"kind": "rtmp", "url": "rtmp://b.example.com/live/k=1"},
    ]
    assert args.fields == [("crop_mode", 2), ("sub_spec_users", ["alice"]), ("task_profile", "4IN_720P")]
    assert not args.json and not args.no_wait


@pytest.mark.parametrize(
    "argv",
    [
        ["task"],  # no action
        ["task", "status", "--task", "t1"],  # no --app
        ["task", "layout", "--app", "a", "--task", "t1"],  # no --layout-ids
        ["task", "start", "--app", "a", "--layout-ids", "1,x"],
        ["task", "start", "--app", "a", "--set", "no-equals"],
        ["task", "start", "--app", "a", "--output", ":url=x"],
        ["task", "start", "--app", "a", "--timeout", "soon"],
    ],
)
def test_bad_command_lines_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser("task").parse_args(argv)
    assert exit_info.value.code == 2


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["task", "--help"], ["task", "start", "--help"]):
        with pytest.raises(SystemExit):
            build_parser("task").parse_args(argv)
        out = capsys.readouterr().out
        assert "exit codes:" in out and "4  timeout" in out and "MPU_ACCESS_KEY" in out


# --- start -----------------------------------------------------------------------------------------


def test_start_shows_progress_until_running(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.script("POST", "/v1/apps/app1/tasks", (201, task("queued", 0, "queued: waiting for a worker")))
    api.script(
        "GET",
        "/v1/apps/app1/tasks/t1",
        (200, task("queued", 0, "queued: waiting for a worker")),
        (200, task("starting", 0, "starting: waiting for a publisher")),
        (200, task("running", 1)),
    )
    code, out, err = mpu(
        capsys,
        "start",
        "--app",
        "app1",
        "--task",
        "t1",
        "--channel",
        "room1",
        "--stream-url",
        CLEAR_URL,
        "--layout-ids",
        "1,2",
        "--media-encode",
        "27",
        "--output",
        "hls:segment_seconds=2",
    )
    assert code == 0, err
    post = api.requests[0]
    assert post.method == "POST" and post.body == {
        "task_id": "t1",
        "channel_id": "room1",
        "stream_url": CLEAR_URL,  # sent as given; never shown
        "layout_ids": [1, 2],
        "media_encode": 27,
        "outputs": [{"kind": "hls", "segment_seconds": 2}],
    }
    assert post.authorization == "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
    progress = [line.split(" ", 1)[1] for line in err.splitlines()]
    assert progress == [
        "task t1 accepted: queued (status 0: waiting): queued: waiting for a worker",
        "starting (status 0: waiting): starting: waiting for a publisher",
        "running (status 1: running)",
    ]
    # The table: one field per row, the StreamURL and the outputs' URLs redacted.
    rows = dict(line.split(None, 1) for line in out.split("\n\n")[0].splitlines()[1:] if " " in line.strip())
    assert rows["state"].strip() == "running" and rows["status"].strip() == "1 (running)"
    assert rows["stream_url"].strip() == "rtmp://cdn.example.com/live/sup***"
    assert out.rstrip("\n").split("\n")[-1].split() == [
        "o1",
        "rtmp",
        "connected",
        "rtmp://cdn.example.com/live/sup***",
        "-",
    ]


def test_start_with_a_body_file_and_json_output(
    api: FakeApi, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    body = tmp_path / "task.json"
    body.write_text(
        json.dumps(
            {
                "task_id": "t1",
                "channel_id": "room1",
                "stream_url": CLEAR_URL,
                "media_encode": 1,
                "crop_mode": 1,
            }
        )
    )
    api.script("POST", "/v1/apps/app1/tasks", (201, task("running", 1)))
    code, out, err = mpu(
        capsys, "start", "--app", "app1", "--body", str(body), "--media-encode", "27", "--json"
    )
    assert code == 0, err
    assert api.requests[0].body == {
        "task_id": "t1",
        "channel_id": "room1",
        "stream_url": CLEAR_URL,
        "media_encode": 27,  # options override the file
        "crop_mode": 1,
    }
    shown = json.loads(out)
    assert shown["state"] == "running" and shown["stream_url"] == "rtmp://cdn.example.com/live/sup***"
    assert shown["outputs"][0]["url"] == "rtmp://cdn.example.com/live/sup***"
    assert len(api.requests) == 1  # already running: no polling


def test_start_of_a_task_that_ends_exits_3(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.script("POST", "/v1/apps/app1/tasks", (201, task("queued", 0)))
    api.script("GET", "/v1/apps/app1/tasks/t1", (200, task("ended", 6, "push URL refused: 403 Forbidden")))
    code, _, err = mpu(
        capsys, "start", "--app", "app1", "--task", "t1", "--channel", "c", "--stream-url", CLEAR_URL
    )
    assert code == 3
    assert "did not start: ended (status 6: other): push URL refused: 403 Forbidden" in err


def test_start_times_out_with_exit_4(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.script("POST", "/v1/apps/app1/tasks", (201, task("queued", 0, "queued: no worker has capacity")))
    api.script("GET", "/v1/apps/app1/tasks/t1", (200, task("queued", 0, "queued: no worker has capacity")))
    began = time.monotonic()
    code, _, err = mpu(
        capsys,
        *("start", "--app", "app1", "--task", "t1", "--channel", "c", "--stream-url", CLEAR_URL),
        *("--timeout", "0.4", "--quiet"),
    )
    assert code == 4 and time.monotonic() - began < 3
    assert err.startswith("mpu task: not running after 0.4 s (queued (status 0: waiting): queued: no worker")
    assert len(api.requests) >= 3


def test_start_refused_exits_2_with_the_api_error(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.script(
        "POST",
        "/v1/apps/app1/tasks",
        (409, {"code": "StreamURL.InUse", "message": "stream_url: in use by task t0", "request_id": "r9"}),
    )
    code, out, err = mpu(
        capsys, "start", "--app", "app1", "--task", "t1", "--channel", "c", "--stream-url", CLEAR_URL
    )
    assert (code, out) == (2, "")
    assert err.strip() == "mpu task: HTTP 409 StreamURL.InUse: stream_url: in use by task t0 (request r9)"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["start", "--app", "a", "--channel", "c", "--stream-url", CLEAR_URL], "--task is required"),
        (["start", "--app", "a", "--task", "t", "--stream-url", CLEAR_URL], "--channel is required"),
        (["start", "--app", "a", "--task", "t", "--channel", "c"], "--stream-url is required"),
        (["update", "--app", "a", "--task", "t"], "nothing to update"),
        (["start", "--app", "a", "--body", "/nonexistent.json"], "--body /nonexistent.json"),
    ],
)
def test_incomplete_requests_exit_2_before_any_call(
    api: FakeApi, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = mpu(capsys, *argv)
    assert code == 2 and message in err and api.requests == []


# --- errors ----------------------------------------------------------------------------------------


def test_server_errors_and_bad_answers_exit_1(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.script(
        "GET", "/v1/apps/app1/tasks/t1", (503, {"code": "ServiceUnavailable", "message": "Redis is down"})
    )
    code, _, err = mpu(capsys, "status", "--app", "app1", "--task", "t1")
    assert code == 1 and "HTTP 503 ServiceUnavailable: Redis is down" in err
    api.script("GET", "/v1/apps/app1/tasks/t1", (200, b"<html>proxy</html>"))
    code, _, err = mpu(capsys, "status", "--app", "app1", "--task", "t1")
    assert code == 1 and "not JSON" in err


def test_unreachable_api_exits_1(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MPU_ACCESS_KEY", f"{KEY}:{SECRET}")
    port = free_port()
    monkeypatch.setenv("MPU_API_URL", f"http://user:{SECRET}@127.0.0.1:{port}/v1-proxy?key={SECRET}")
    code, _, err = mpu(capsys, "list", "--app", "app1")
    assert code == 1 and err.startswith(f"mpu task: Network: http://127.0.0.1:{port}: ")


def test_each_call_has_a_timeout(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.script("GET", "/v1/apps/app1/tasks", (200, {"tasks": []}))
    api.delay = 2.0
    began = time.monotonic()
    code, _, err = mpu(capsys, "list", "--app", "app1", "--request-timeout", "0.3")
    assert code == 1 and time.monotonic() - began < 1.5 and "timed out" in err


@pytest.mark.parametrize("value", ["", "no-colon", ":secret", "key:"])
def test_missing_or_malformed_access_key_exits_2(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    monkeypatch.setenv("MPU_ACCESS_KEY", value)
    code, _, err = mpu(capsys, "list", "--app", "app1")
    assert code == 2 and "MPU_ACCESS_KEY" in err and api.requests == []


def test_wrong_credentials_exit_2(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.script(
        "GET", "/v1/apps/app1/tasks", (403, {"code": "InvalidAccessKeyId.NotFound", "message": "unknown key"})
    )
    code, _, err = mpu(capsys, "list", "--app", "app1")
    assert code == 2 and "HTTP 403 InvalidAccessKeyId.NotFound" in err


# --- the other commands ----------------------------------------------------------------------------


def test_list_as_a_table_and_as_json(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    second = task("ended", 3, "stopped\nby the user", task_id="t2", users=[], worker=None)
    api.script("GET", "/v1/apps/app1/tasks", (200, {"tasks": [task("running", 1), second]}))
    code, out, _ = mpu(capsys, "list", "--app", "app1")
    assert code == 0
    lines = out.rstrip("\n").split("\n")
    assert len(lines) == 3  # a control character in a value does not break a row
    assert lines[0].split() == [
        "TASK",
        "CHANNEL",
        "STATE",
        "STATUS",
        "LAYOUT",
        "USERS",
        "WORKER",
        "STREAM_URL",
        "REASON",
    ]
    assert lines[1].split() == [
        "t1",
        "room1",
        "running",
        "1",
        "2",
        "user1,user2",
        "mix@host",
        "rtmp://cdn.example.com/live/sup***",
        "-",
    ]
    assert lines[2].split() == [
        "t2",
        "room1",
        "ended",
        "3",
        "2",
        "-",
        "-",
        "rtmp://cdn.example.com/live/sup***",
        "stopped\\nby",
        "the",
        "user",
    ]
    # Columns line up.
    assert len({line.index("rtmp://") for line in lines[1:]}) == 1

    code, out, _ = mpu(capsys, "list", "--app", "app1", "--json")
    assert code == 0
    tasks = json.loads(out)["tasks"]
    assert [t["task_id"] for t in tasks] == ["t1", "t2"]
    assert {t["stream_url"] for t in tasks} == {"rtmp://cdn.example.com/live/sup***"}

    api.script("GET", "/v1/apps/app1/tasks", (200, {"tasks": []}))
    assert mpu(capsys, "list", "--app", "app1")[:2] == (0, "no tasks\n")


def test_status_of_an_unknown_task_exits_2(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.script(
        "GET", "/v1/apps/app1/tasks/nope", (404, {"code": "InvalidTask.NotFound", "message": "no task nope"})
    )
    code, _, err = mpu(capsys, "status", "--app", "app1", "--task", "nope")
    assert code == 2 and "InvalidTask.NotFound" in err


def test_stop_waits_until_ended(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.script("DELETE", "/v1/apps/app1/tasks/t1", (200, task("stopping", 1, "stopping: stop requested")))
    api.script(
        "GET",
        "/v1/apps/app1/tasks/t1",
        (200, task("stopping", 1, "stopping: stop requested")),
        (503, {"code": "ServiceUnavailable", "message": "blip"}),  # retried while waiting
        (200, task("ended", 3, "stopped by the user")),
    )
    code, out, err = mpu(capsys, "stop", "--app", "app1", "--task", "t1", "--json")
    assert code == 0, err
    assert json.loads(out)["state"] == "ended"
    assert "stop requested: stopping (status 1: running)" in err and "ended (status 3" in err


def test_stop_times_out_with_exit_4(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.script("DELETE", "/v1/apps/app1/tasks/t1", (200, task("stopping", 1)))
    api.script("GET", "/v1/apps/app1/tasks/t1", (200, task("stopping", 1)))
    code, _, err = mpu(capsys, "stop", "--app", "app1", "--task", "t1", "--timeout", "0.3")
    assert code == 4 and "not ended after 0.3 s" in err


def test_update_and_layout_send_their_fields(
    api: FakeApi, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    body = tmp_path / "update.json"
    body.write_text(json.dumps({"background_color": 255, "crop_mode": 1}))
    api.script("PATCH", "/v1/apps/app1/tasks/t1", (200, task("running", 1)))
    api.script("PATCH", "/v1/apps/app1/tasks/t1/layout", (200, task("running", 1, layout_ids=[6])))
    code, _, err = mpu(
        capsys, "update", "--app", "app1", "--task", "t1", "--body", str(body), "--set", "crop_mode=2"
    )
    assert code == 0, err
    assert api.requests[-1].body == {"background_color": 255, "crop_mode": 2}
    code, out, err = mpu(capsys, "layout", "--app", "app1", "--task", "t1", "--layout-ids", "6", "--json")
    assert code == 0, err
    assert api.requests[-1].body == {"layout_ids": [6]} and json.loads(out)["layout_ids"] == [6]


def test_ids_are_quoted_in_the_path(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    mpu(capsys, "status", "--app", "a/b", "--task", "../x")
    assert api.requests[0].path == "/v1/apps/a%2Fb/tasks/..%2Fx"


def test_the_mpu_entry_point_returns_the_exit_code(api: FakeApi, tmp_path: Path) -> None:
    api.script("GET", "/v1/apps/app1/tasks/t1", (200, task("running", 1)))
    env = {**os.environ, "MPU_RUN_DIR": str(tmp_path)}
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "rtc_mpu.cli.main",
            "task",
            "status",
            "--app",
            "app1",
            "--task",
            "t1",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["task_id"] == "t1"
    missing = subprocess.run(
        [sys.executable, "-m", "rtc_mpu.cli.main", "task", "status", "--app", "app1", "--task", "zz"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert missing.returncode == 2 and "no such route" in missing.stderr
    # ``mpu task`` loads no media library (a quick command).
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from rtc_mpu.cli.main import build_parser; build_parser('task'); "
            "print(sorted(m for m in ('av', 'aiortc', 'numpy', 'celery', 'flask') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert probe.stdout.strip() == "[]", probe.stderr
