"""``mpu task start|stop|status|list|update|layout``: the REST API's task calls from a terminal.

The API is ``MPU_API_URL`` (default ``http://127.0.0.1:8080``, or ``--api-url``), the key
``MPU_ACCESS_KEY=AK:SECRET`` (HTTP Basic, as the REST API expects). The secret is never printed, and
every URL shown (a task's ``stream_url``, its outputs' ``url``) goes through
:func:`rtc_mpu.spec.urls.redact_url` again, whatever the API answered. Every HTTP call has a timeout
(``--request-timeout``, 10 s); ``start`` and ``stop`` wait for the task with an overall ``--timeout``.

Output is a table (standard output; values have their control characters escaped), or the API's JSON
with ``--json``; progress lines while waiting go to standard error (``--quiet`` to silence them).
Exit codes: see :data:`EXIT_CODES_HELP`. Standard library only: no media library is imported.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from rtc_mpu.spec.text_rules import escape_for_log
from rtc_mpu.spec.urls import redact_url

#: Exit codes of ``mpu task``.
EXIT_OK = 0
EXIT_API_ERROR = 1  # network error, no answer in time, 5xx, an answer that is not the API's JSON
EXIT_REFUSED = 2  # bad usage, or the API refused the request (4xx: validation, auth, not found, conflict)
EXIT_TASK_FAILED = 3  # the task ended (or is ending) instead of running
EXIT_TIMEOUT = 4  # the task did not reach the state waited for within --timeout
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """exit codes:
  0  done (start: the task is running; stop: it has ended; other commands: the API answered)
  1  API or network error (unreachable, no answer within --request-timeout, 5xx, not the API's JSON)
  2  usage error, or the request was refused (4xx: validation, credentials, unknown task, conflict)
  3  the task failed: it ended or is stopping instead of running (start)
  4  timeout: the task did not reach the state waited for within --timeout (it is left as it is)
130 interrupted (Ctrl-C); the task is left as it is

environment:
  MPU_API_URL     the API's base URL (default http://127.0.0.1:8080)
  MPU_ACCESS_KEY  AK:SECRET, sent with HTTP Basic (never printed)
"""

log = logging.getLogger("mpu.task")

DEFAULT_API_URL = "http://127.0.0.1:8080"
#: A task path's ids (for the log records' ``app_id``/``task_id``).
_TASK_PATH = re.compile(r"^/v1/apps/([^/]+)/tasks(?:/([^/]+))?")
#: Seconds between two GETs while waiting for a task.
POLL_INTERVAL = 0.5
#: Keys whose values are URLs that may hold a stream key (redacted wherever they appear).
URL_KEYS = frozenset({"stream_url", "url"})


class UsageError(Exception):
    """A command line (or body file) that cannot make a request: exit code 2."""


@dataclass(eq=False)
class ApiError(Exception):
    """A call that did not succeed: an HTTP error answer (``status`` >= 400) or no usable answer
    (``status`` 0: network error, timeout, not JSON)."""

    status: int
    code: str
    message: str
    request_id: str | None = None

    @property
    def exit_code(self) -> int:
        """:data:`EXIT_REFUSED` for a 4xx answer, :data:`EXIT_API_ERROR` otherwise."""
        return EXIT_REFUSED if 400 <= self.status < 500 else EXIT_API_ERROR

    def __str__(self) -> str:
        where = f"HTTP {self.status} " if self.status else ""
        rid = f" (request {self.request_id})" if self.request_id else ""
        return escape_for_log(f"{where}{self.code}: {self.message}{rid}")


def redacted(value: Any) -> Any:
    """``value`` (decoded JSON) with every ``stream_url``/``url`` string redacted."""
    if isinstance(value, Mapping):
        return {
            k: (redact_url(v) if k in URL_KEYS and isinstance(v, str) else redacted(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redacted(v) for v in value]
    return value


def _origin(url: str) -> str:
    """``scheme://host:port`` of the API URL (for messages: no user info, path or query)."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    return f"{parts.scheme}://{parts.hostname or ''}{port}"


class TaskClient:
    """The REST API's task calls with HTTP Basic auth; every call has ``timeout`` seconds."""

    def __init__(self, base: str, key: str, secret: str, timeout: float = 10.0) -> None:
        parts = urllib.parse.urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"MPU_API_URL must be an http(s) URL, got {_origin(base)!r}")
        self.base = base.rstrip("/")
        self.timeout = timeout
        self._auth = "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()

    def call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Send one JSON request; returns the decoded answer of a 2xx.

        Raises:
            ApiError: an error answer, a network error or timeout, or an answer that is not JSON.
        """
        request = urllib.request.Request(
            self.base + path,
            method=method,
            data=json.dumps(dict(body)).encode() if body is not None else None,
            headers={
                "Authorization": self._auth,
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        began = time.monotonic()
        ids = _path_ids(path)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, _read_error_body(exc)
        except (urllib.error.URLError, OSError) as exc:  # refused, unresolvable, timeout
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            log.debug("%s %s failed: %s", method, path, reason, extra=ids)
            raise ApiError(0, "Network", f"{_origin(self.base)}: {reason}") from None
        log.debug("%s %s: HTTP %d in %.3f s", method, path, status, time.monotonic() - began, extra=ids)
        try:
            answer = json.loads(raw or b"{}")
        except ValueError:
            raise ApiError(status, "BadAnswer", f"the answer to {method} {path} is not JSON") from None
        if not isinstance(answer, dict):
            raise ApiError(status, "BadAnswer", f"the answer to {method} {path} is not a JSON object")
        if status >= 400:
            raise ApiError(
                status,
                str(answer.get("code") or "Error"),
                str(answer.get("message") or "no message"),
                str(answer["request_id"]) if answer.get("request_id") else None,
            )
        return answer

    @staticmethod
    def task_path(app_id: str, task_id: str | None = None) -> str:
        """``/v1/apps/<app>/tasks[/<task>]`` with the ids quoted."""
        path = f"/v1/apps/{urllib.parse.quote(app_id, safe='')}/tasks"
        return path if task_id is None else f"{path}/{urllib.parse.quote(task_id, safe='')}"


def _path_ids(path: str) -> dict[str, str]:
    """``app_id`` and ``task_id`` of a task path, for a log record's ``extra``."""
    match = _TASK_PATH.match(path)
    if match is None:
        return {}
    ids = {"app_id": urllib.parse.unquote(match.group(1))}
    if match.group(2):
        ids["task_id"] = urllib.parse.unquote(match.group(2))
    return ids


def _read_error_body(exc: urllib.error.HTTPError) -> bytes:
    try:
        return exc.read()
    except OSError:
        return b""


# --- the command line ------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers, got {text!r}") from None


def _scalar(text: str) -> Any:
    """A command-line value as JSON if it parses (numbers, lists, objects, true/false), else a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _field(text: str) -> tuple[str, Any]:
    """``--set FIELD=VALUE``: the value as JSON if it parses, else a string."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    return name, _scalar(value)


def _output(text: str) -> dict[str, Any]:
    """``--output KIND[:KEY=VALUE[,KEY=VALUE...]]``, e.g. ``record:format=mp4,max_duration_seconds=600``
    or ``rtmp:url=rtmp://host/live/key`` (a value holding a comma: use ``--body``)."""
    kind, _, rest = text.partition(":")
    if not kind:
        raise argparse.ArgumentTypeError(f"expected KIND[:KEY=VALUE,...], got {text!r}")
    output: dict[str, Any] = {"kind": kind}
    for pair in filter(None, rest.split(",")):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE in --output, got {pair!r}")
        output[key] = value if key == "url" else _scalar(value)
    return output


def _common(p: argparse.ArgumentParser, *, task: bool = True) -> None:
    p.add_argument("--app", required=True, help="AppId")
    if task:
        p.add_argument("--task", help="TaskId")
    p.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    p.add_argument("--api-url", default=None, help=f"the API (default: env MPU_API_URL or {DEFAULT_API_URL})")
    p.add_argument(
        "--request-timeout", type=float, default=10.0, help="seconds for each HTTP call (default 10)"
    )


def _waiting(p: argparse.ArgumentParser, what: str, default: float) -> None:
    p.add_argument(
        "--timeout", type=float, default=default, help=f"seconds to wait until {what} (default {default:g})"
    )
    p.add_argument("--no-wait", action="store_true", help="answer at once, without waiting")
    p.add_argument("--quiet", action="store_true", help="no progress lines on standard error")


def _body_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layout-ids", type=_int_list, help="comma list of LayoutIds, e.g. 1,2")
    p.add_argument("--media-encode", type=int, help="MediaEncode id, e.g. 27 (1280x720 30 fps)")
    p.add_argument(
        "--set",
        dest="fields",
        type=_field,
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="any other field in snake_case (VALUE as JSON if it parses), e.g. crop_mode=2; repeatable",
    )
    p.add_argument(
        "--body",
        type=Path,
        help="a JSON file (- for standard input) with the request's fields; options given override it",
    )


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``task`` and its subcommands on the ``mpu`` parser."""
    fmt = argparse.RawDescriptionHelpFormatter
    top = subparsers.add_parser(
        "task",
        help="start, stop, watch and change mix tasks through the REST API",
        description="The REST API's task calls (MPU_API_URL, MPU_ACCESS_KEY=AK:SECRET).",
        epilog=EXIT_CODES_HELP,
        formatter_class=fmt,
    )
    sub = top.add_subparsers(dest="action", required=True)

    start = sub.add_parser(
        "start",
        help="start a task (StartMPUTask) and wait until it runs",
        description="Start a task and show its progress (queued, starting, running, with the reason) until "
        "it runs (exit 0), ends instead (3) or --timeout passes (4).",
        epilog=EXIT_CODES_HELP,
        formatter_class=fmt,
    )
    _common(start)
    start.add_argument("--channel", help="ChannelId")
    start.add_argument("--stream-url", help="StreamURL, rtmp:// or rtmps:// (shown redacted)")
    start.add_argument("--task-profile", help="TaskProfile, e.g. 4IN_720P")
    start.add_argument(
        "--output",
        dest="outputs",
        type=_output,
        action="append",
        default=[],
        metavar="KIND[:KEY=VALUE,...]",
        help="an output besides the StreamURL: rtmp:url=URL, record:format=mp4, hls:segment_seconds=2, "
        "snapshot:interval_seconds=5; repeatable",
    )
    _body_options(start)
    _waiting(start, "the task runs", 60.0)
    start.set_defaults(func=run, handler=start_task)

    stop = sub.add_parser(
        "stop",
        help="stop a task (StopMPUTask) and wait until it has ended",
        epilog=EXIT_CODES_HELP,
        formatter_class=fmt,
    )
    _common(stop)
    _waiting(stop, "the task has ended", 60.0)
    stop.set_defaults(func=run, handler=stop_task)

    status = sub.add_parser(
        "status", help="one task's status (GetMPUTaskStatus)", epilog=EXIT_CODES_HELP, formatter_class=fmt
    )
    _common(status)
    status.set_defaults(func=run, handler=task_status)

    listing = sub.add_parser(
        "list", help="the app's active and recently ended tasks", epilog=EXIT_CODES_HELP, formatter_class=fmt
    )
    _common(listing, task=False)
    listing.set_defaults(func=run, handler=list_tasks)

    update = sub.add_parser(
        "update",
        help="change a running task (UpdateMPUTask)",
        description="Any StartMPUTask field but task_id, channel_id, stream_url and task_profile.",
        epilog=EXIT_CODES_HELP,
        formatter_class=fmt,
    )
    _common(update)
    _body_options(update)
    update.set_defaults(func=run, handler=update_task)

    layout = sub.add_parser(
        "layout",
        help="change a task's LayoutIds (UpdateMPULayout)",
        epilog=EXIT_CODES_HELP,
        formatter_class=fmt,
    )
    _common(layout)
    layout.add_argument("--layout-ids", type=_int_list, required=True, help="comma list of LayoutIds")
    layout.set_defaults(func=run, handler=update_layout)


# --- running ---------------------------------------------------------------------------------------


@dataclass
class Context:
    """What a handler needs: the client, the arguments and where to write."""

    client: TaskClient
    args: argparse.Namespace
    out: TextIO
    err: TextIO

    def progress(self, text: str) -> None:
        """A progress line on standard error (not with ``--quiet``)."""
        if not getattr(self.args, "quiet", False):
            print(f"{time.strftime('%H:%M:%S')} {escape_for_log(text)}", file=self.err, flush=True)

    def show(self, answer: Mapping[str, Any]) -> None:
        """The answer as JSON (``--json``) or as a table."""
        safe = redacted(answer)
        if self.args.json:
            print(json.dumps(safe, indent=2, ensure_ascii=False), file=self.out)
        elif "tasks" in safe:
            print(task_table(safe["tasks"]), file=self.out)
        else:
            print(task_details(safe), file=self.out)


def credentials(env: Mapping[str, str]) -> tuple[str, str]:
    """(key, secret) from ``MPU_ACCESS_KEY=AK:SECRET``.

    Raises:
        UsageError: unset or not ``AK:SECRET``.
    """
    value = env.get("MPU_ACCESS_KEY", "")
    key, sep, secret = value.partition(":")
    if not value:
        raise UsageError("set MPU_ACCESS_KEY=AK:SECRET (an access key of the API's MPU_ACCESS_KEYS)")
    if not sep or not key or not secret:
        raise UsageError("MPU_ACCESS_KEY must be AK:SECRET")
    return key, secret


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one ``mpu task`` subcommand; returns its exit code (module docstring)."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        key, secret = credentials(os.environ)
        base = args.api_url or os.environ.get("MPU_API_URL") or DEFAULT_API_URL
        if args.request_timeout <= 0 or getattr(args, "timeout", 1) <= 0:
            raise UsageError("timeouts must be positive")
        context = Context(TaskClient(base, key, secret, args.request_timeout), args, out, err)
        handler: Callable[[Context], int] = args.handler
        return handler(context)
    except UsageError as exc:
        print(f"mpu task: {escape_for_log(str(exc))}", file=err)
        return EXIT_REFUSED
    except ApiError as exc:
        print(f"mpu task: {exc}", file=err)
        return exc.exit_code
    except KeyboardInterrupt:
        print("mpu task: interrupted; the task is left as it is", file=err)
        return EXIT_INTERRUPTED


def _task_id(args: argparse.Namespace, body: Mapping[str, Any] | None = None) -> str:
    task_id = args.task or (body or {}).get("task_id")
    if not isinstance(task_id, str) or not task_id:
        raise UsageError("--task is required")
    return task_id


def _load_body(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
        body = json.loads(text)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--body {path}: {exc}") from None
    if not isinstance(body, dict):
        raise UsageError(f"--body {path}: not a JSON object")
    return body


def _fields(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The body file's fields, then ``--set`` fields, then the named options that were given."""
    body = _load_body(args.body)
    body.update(dict(args.fields))
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value != []:
            body[name] = value
    return body


def start_task(ctx: Context) -> int:
    """POST the task, then wait until it runs (or ends, or the timeout)."""
    args = ctx.args
    body = _fields(args, ("channel", "stream_url", "task_profile", "layout_ids", "media_encode"))
    if "channel" in body:
        body["channel_id"] = body.pop("channel")
    if args.outputs:
        body["outputs"] = [*body.get("outputs", []), *args.outputs]
    body["task_id"] = _task_id(args, body)
    if "channel_id" not in body:
        raise UsageError("--channel is required (or channel_id in --body)")
    if "stream_url" not in body and not any(o.get("kind") == "rtmp" for o in body.get("outputs", [])):
        raise UsageError("--stream-url is required (or an rtmp --output)")
    path = ctx.client.task_path(args.app, body["task_id"])
    task = ctx.client.call("POST", ctx.client.task_path(args.app), body)
    ctx.progress(f"task {body['task_id']} accepted: {describe(task)}")
    if args.no_wait:
        ctx.show(task)
        return EXIT_OK
    return _wait(ctx, path, task, _start_outcome, "running")


def stop_task(ctx: Context) -> int:
    """DELETE the task, then wait until it has ended."""
    path = ctx.client.task_path(ctx.args.app, _task_id(ctx.args))
    task = ctx.client.call("DELETE", path)
    ctx.progress(f"stop requested: {describe(task)}")
    if ctx.args.no_wait:
        ctx.show(task)
        return EXIT_OK
    return _wait(ctx, path, task, lambda t: EXIT_OK if t.get("state") == "ended" else None, "ended")


def task_status(ctx: Context) -> int:
    """GET one task."""
    ctx.show(ctx.client.call("GET", ctx.client.task_path(ctx.args.app, _task_id(ctx.args))))
    return EXIT_OK


def list_tasks(ctx: Context) -> int:
    """GET the app's tasks."""
    ctx.show(ctx.client.call("GET", ctx.client.task_path(ctx.args.app)))
    return EXIT_OK


def update_task(ctx: Context) -> int:
    """PATCH the task's fields (UpdateMPUTask)."""
    body = _fields(ctx.args, ("layout_ids", "media_encode"))
    if not body:
        raise UsageError("nothing to update: give --layout-ids, --media-encode, --set or --body")
    ctx.show(ctx.client.call("PATCH", ctx.client.task_path(ctx.args.app, _task_id(ctx.args)), body))
    return EXIT_OK


def update_layout(ctx: Context) -> int:
    """PATCH the task's LayoutIds (UpdateMPULayout)."""
    path = ctx.client.task_path(ctx.args.app, _task_id(ctx.args)) + "/layout"
    ctx.show(ctx.client.call("PATCH", path, {"layout_ids": ctx.args.layout_ids}))
    return EXIT_OK


def _start_outcome(task: Mapping[str, Any]) -> int | None:
    """The exit code once a starting task has an outcome: running (status 1) or ending."""
    if task.get("state") == "running" and task.get("status") == 1:
        return EXIT_OK
    if task.get("state") in ("ended", "stopping"):
        return EXIT_TASK_FAILED
    return None


def _wait(
    ctx: Context,
    path: str,
    task: dict[str, Any],
    outcome: Callable[[Mapping[str, Any]], int | None],
    goal: str,
) -> int:
    """Poll ``path`` until ``outcome`` gives an exit code or ``--timeout`` passes; progress lines on each
    change of state, status or reason. A failed poll (network, 5xx) is retried until the deadline."""
    deadline = time.monotonic() + ctx.args.timeout
    seen = _progress_key(task)
    last_error: ApiError | None = None
    while (code := outcome(task)) is None:
        if time.monotonic() >= deadline:
            ctx.show(task)
            why = f"; last error: {last_error}" if last_error is not None else ""
            print(
                f"mpu task: not {goal} after {ctx.args.timeout:g} s ({describe(task)}){why}",
                file=ctx.err,
            )
            return EXIT_TIMEOUT
        time.sleep(min(POLL_INTERVAL, max(0.0, deadline - time.monotonic())))
        try:
            task = ctx.client.call("GET", path)
            last_error = None
        except ApiError as exc:
            if exc.exit_code == EXIT_REFUSED:  # the task is gone, or the key no longer works
                raise
            last_error = exc
            continue
        if _progress_key(task) != seen:
            seen = _progress_key(task)
            ctx.progress(describe(task))
    ctx.show(task)
    if code == EXIT_TASK_FAILED:
        print(f"mpu task: the task did not start: {describe(task)}", file=ctx.err)
    return code


def _progress_key(task: Mapping[str, Any]) -> tuple[Any, ...]:
    return task.get("state"), task.get("status"), task.get("reason")


def describe(task: Mapping[str, Any]) -> str:
    """``state (status N: text): reason`` of a task, on one line."""
    text = f"{task.get('state', '?')} (status {task.get('status', '?')}"
    if task.get("status_text"):
        text += f": {task['status_text']}"
    text += ")"
    if task.get("reason"):
        text += f": {task['reason']}"
    return escape_for_log(text)


# --- rendering -------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    """A value as one table cell: lists comma-joined, None as -, controls escaped."""
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, list):
        return ",".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return escape_for_log(json.dumps(value, ensure_ascii=False, sort_keys=True))
    return escape_for_log(str(value))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell; the last column unpadded."""
    cells = [list(headers), *([_cell(v) for v in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i < len(headers) - 1 else c
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    )


#: Columns of ``mpu task list``: header, key.
LIST_COLUMNS = (
    ("TASK", "task_id"),
    ("CHANNEL", "channel_id"),
    ("STATE", "state"),
    ("STATUS", "status"),
    ("LAYOUT", "layout_id"),
    ("USERS", "users"),
    ("WORKER", "worker"),
    ("STREAM_URL", "stream_url"),
    ("REASON", "reason"),
)

#: Rows of ``mpu task status``: label, key.
DETAIL_ROWS = (
    ("task", "task_id"),
    ("app", "app_id"),
    ("channel", "channel_id"),
    ("state", "state"),
    ("status", "status"),
    ("reason", "reason"),
    ("stream_url", "stream_url"),
    ("layout", "layout_id"),
    ("layout_ids", "layout_ids"),
    ("users", "users"),
    ("worker", "worker"),
    ("restarts", "restarts"),
    ("ignored", "ignored"),
    ("created_at", "created_at"),
    ("updated_at", "updated_at"),
    ("ended_at", "ended_at"),
)


def task_table(tasks: Sequence[Mapping[str, Any]]) -> str:
    """``mpu task list``'s table (a task per row)."""
    if not tasks:
        return "no tasks"
    return table([h for h, _ in LIST_COLUMNS], [[t.get(k) for _, k in LIST_COLUMNS] for t in tasks])


def task_details(task: Mapping[str, Any]) -> str:
    """``mpu task status``'s table (a field per row), then its outputs."""
    rows = []
    for label, key in DETAIL_ROWS:
        value = task.get(key)
        if key == "status" and task.get("status_text"):
            value = f"{value} ({task['status_text']})"
        rows.append([label, value])
    stats = task.get("stats") or {}
    if stats:
        rows.append(
            [
                "stats",
                ", ".join(
                    f"{k}={_cell(v)}" for k, v in sorted(stats.items()) if not isinstance(v, list | dict)
                ),
            ]
        )
    text = table(["FIELD", "VALUE"], rows)
    outputs = task.get("outputs") or []
    if outputs:
        text += "\n\n" + table(
            ["OUTPUT", "KIND", "STATE", "URL", "ERROR"],
            [
                [o.get("output_id"), o.get("kind"), o.get("state"), o.get("url"), o.get("error")]
                for o in outputs
            ],
        )
    return text
