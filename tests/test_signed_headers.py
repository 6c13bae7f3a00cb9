"""Issue #11, D6: nothing that gives an RPC call its meaning may escape its signature, through the real
app (Flask test client, a real Redis task store). ACS3 requests are signed here by the newer SDK's own
code (``alibabacloud_tea_openapi.utils.Utils.get_authorization``), which signs exactly the headers it
is given: an attacker's request is one signed with fewer headers than it sends.

The review's reproduction: a GetMPUTaskStatus signed over ``host;x-acs-date`` only, with the nonce and
``x-acs-action`` sent unsigned, could be replayed under a new nonce and turned into a StopMPUTask that
stopped the task."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from rtc_mpu.workers.store import TaskStore
from tests.signing import (
    SDK_HEADERS,
    acs3_authorization,
    acs3_headers,
    api_client,
    basic_auth,
    rpc_v1_pairs,
)

AK, SECRET = "acs-key", "acs-secret"
APP, TASK = "app1", "t1"
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def client(task_store: TaskStore) -> FlaskClient:
    """The API on the real store; rate limit and failure throttle off (tests/test_auth_throttle.py has
    those), so every answer here is the signature's."""
    return api_client(task_store, f"{AK}:{SECRET}", MPU_RATE_LIMIT=0, MPU_AUTH_FAILURE_LIMIT=0)


class Acs3Call:
    """An ACS3 call as the newer SDK builds it: query, headers, body; :meth:`sign` signs a subset."""

    def __init__(
        self,
        action: str | None = "GetMPUTaskStatus",
        query: dict[str, str] | None = None,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> None:
        self.query = {"AppId": APP, "TaskId": TASK} if query is None else query
        self.body = body
        self.headers = acs3_headers(action=action, body=body, content_type=content_type)

    def sign(self, only: tuple[str, ...] | None = None, leave_out: str | None = None) -> dict[str, str]:
        """Headers to send: all of :attr:`headers` and an Authorization signing ``only`` those (default
        all) less ``leave_out``."""
        signed = {k: v for k, v in self.headers.items() if (only is None or k in only) and k != leave_out}
        authorization = acs3_authorization(self.query, signed, self.body, AK, SECRET)
        return {**self.headers, "Authorization": authorization}

    def send(self, client: FlaskClient, headers: dict[str, str]) -> TestResponse:
        return client.post("/", query_string=self.query, headers=headers, data=self.body)


def code_of(answer: TestResponse) -> tuple[int, str, str]:
    body = answer.json
    assert body is not None and set(body) == {"RequestId", "HostId", "Code", "Message"}, answer.data
    return answer.status_code, body["Code"], body["Message"]


def start_task(client: FlaskClient) -> None:
    auth = basic_auth(AK, SECRET)
    body = {"task_id": TASK, "channel_id": "c", "stream_url": "rtmp://h/live/a"}
    assert client.post(f"/v1/apps/{APP}/tasks", json=body, headers=auth).status_code == 201


def state_of(client: FlaskClient) -> str:
    auth = basic_auth(AK, SECRET)
    answer = client.get(f"/v1/apps/{APP}/tasks/{TASK}", headers=auth)
    assert answer.status_code == 200 and answer.json is not None
    return str(answer.json["state"])


# -- the reproduction ---------------------------------------------------------------------------------


def test_the_review_reproduction_replay_and_action_swap_are_refused(client: FlaskClient) -> None:
    start_task(client)
    before = state_of(client)
    # A fully signed call is served (as the SDK sends it)...
    call = Acs3Call()
    assert call.send(client, call.sign()).status_code == 200
    # ...and one signed over host;x-acs-date only is not, nor its replays under new nonces.
    weak = Acs3Call()
    headers = weak.sign(only=("host", "x-acs-date"))
    for _ in range(3):
        status, code, message = code_of(weak.send(client, headers))
        assert (status, code) == (400, "IncompleteSignature")
        for unsigned in ("x-acs-action", "x-acs-signature-nonce", "x-acs-version", "x-acs-content-sha256"):
            assert unsigned in message
        headers = {**headers, "x-acs-signature-nonce": uuid.uuid4().hex}
    # The copied GetMPUTaskStatus turned into a StopMPUTask does not stop the task.
    swapped = {**headers, "x-acs-action": "StopMPUTask", "x-acs-signature-nonce": uuid.uuid4().hex}
    assert code_of(weak.send(client, swapped))[:2] == (400, "IncompleteSignature")
    # Nor does the fully signed one with its action (or nonce) changed.
    full = Acs3Call()
    signed = full.sign()
    for change in ({"x-acs-action": "StopMPUTask"}, {"x-acs-signature-nonce": uuid.uuid4().hex}):
        assert code_of(full.send(client, {**signed, **change}))[:2] == (400, "SignatureDoesNotMatch")
    assert state_of(client) == before != "ended"
    # A real StopMPUTask, signed, does stop it: the refusals above are what kept it running.
    stop = Acs3Call("StopMPUTask")
    assert stop.send(client, stop.sign()).status_code == 200
    assert state_of(client) == "ended"


# -- every header a signature must cover ---------------------------------------------------------------


@pytest.mark.parametrize("header", [*SDK_HEADERS, "content-type"])
def test_each_header_left_out_of_signed_headers_is_refused(client: FlaskClient, header: str) -> None:
    start_task(client)
    body = urlencode({"TaskId": TASK}).encode()  # a form body: its parameters count
    call = Acs3Call(query={"AppId": APP}, body=body, content_type=FORM)
    status, code, message = code_of(call.send(client, call.sign(leave_out=header)))
    assert (status, code) == (400, "IncompleteSignature")
    assert f"not signed: {header}" in message
    # The same call with every header signed is served.
    call = Acs3Call(query={"AppId": APP}, body=body, content_type=FORM)
    answer = call.send(client, call.sign())
    assert answer.status_code == 200 and answer.json is not None and answer.json["TaskId"] == TASK


@pytest.mark.parametrize("header", ["x-acs-signature-nonce", "x-acs-date", "x-acs-content-sha256"])
def test_the_nonce_date_and_content_hash_are_required(client: FlaskClient, header: str) -> None:
    call = Acs3Call()
    del call.headers[header]
    status, code, message = code_of(call.send(client, call.sign()))
    assert (status, code) == (400, "MissingParameter") and header in message


def test_any_x_acs_header_sent_must_be_signed(client: FlaskClient) -> None:
    call = Acs3Call()
    headers = {**call.sign(), "x-acs-security-token": "anything"}
    status, code, message = code_of(call.send(client, headers))
    assert (status, code) == (400, "IncompleteSignature") and "x-acs-security-token" in message


def test_a_body_whose_content_type_changes_is_refused(client: FlaskClient) -> None:
    """A body signed as text (ignored) cannot become form parameters by an unsigned content type."""
    start_task(client)
    body = urlencode({"AppId": APP, "TaskId": TASK}).encode()
    call = Acs3Call("StopMPUTask", query={}, body=body, content_type="text/plain")
    # Signed without content-type, sent as a form: its body would be read as AppId and TaskId.
    headers = {**call.sign(leave_out="content-type"), "content-type": FORM}
    status, code, message = code_of(call.send(client, headers))
    assert (status, code) == (400, "IncompleteSignature") and "content-type" in message
    # Signed with it, the content type cannot change either.
    call.headers["x-acs-signature-nonce"] = uuid.uuid4().hex
    headers = {**call.sign(), "content-type": FORM}
    assert code_of(call.send(client, headers))[:2] == (400, "SignatureDoesNotMatch")
    assert state_of(client) != "ended"


def test_a_repeated_header_is_not_the_signed_value(client: FlaskClient) -> None:
    call = Acs3Call()
    headers = [*call.sign().items(), ("x-acs-action", "StopMPUTask")]
    answer = client.post("/", query_string=call.query, headers=headers)
    assert code_of(answer)[:2] == (400, "SignatureDoesNotMatch")


def test_two_query_parameters_cannot_be_sent_as_one(client: FlaskClient) -> None:
    """Signed: AppId and TaskId. Sent: one parameter named ``AppId=app1&TaskId`` (same canonical text if
    names were not encoded)."""
    call = Acs3Call()
    headers = call.sign()
    answer = client.post("/?" + urlencode({f"AppId={APP}&TaskId": TASK}), headers=headers)
    assert code_of(answer)[:2] == (400, "SignatureDoesNotMatch")


# -- where Action and Version may come from ------------------------------------------------------------


def test_acs3_action_in_query_and_header_must_agree(client: FlaskClient) -> None:
    start_task(client)
    call = Acs3Call("StopMPUTask", query={"Action": "GetMPUTaskStatus", "AppId": APP, "TaskId": TASK})
    status, code, message = code_of(call.send(client, call.sign()))
    assert (status, code) == (400, "InvalidParameter") and "x-acs-action" in message
    call = Acs3Call("GetMPUTaskStatus", query={"Version": "2018-01-11", "AppId": APP, "TaskId": TASK})
    call.headers["x-acs-version"] = "2099-01-01"
    assert code_of(call.send(client, call.sign()))[:2] == (400, "InvalidParameter")
    agreeing = Acs3Call(
        "GetMPUTaskStatus", query={"Action": "GetMPUTaskStatus", "AppId": APP, "TaskId": TASK}
    )
    assert agreeing.send(client, agreeing.sign()).status_code == 200
    only_query = Acs3Call(None, query={"Action": "GetMPUTaskStatus", "AppId": APP, "TaskId": TASK})
    assert only_query.send(client, only_query.sign()).status_code == 200
    assert state_of(client) != "ended"


def rpc_v1(action: str | None = "GetMPUTaskStatus", **extra: str) -> list[tuple[str, str]]:
    """Signed RPC v1 parameters (``Action`` left out when None), as pairs."""
    return rpc_v1_pairs(AK, SECRET, action, **extra)


def test_rpc_v1_does_not_believe_unsigned_action_or_version_headers(client: FlaskClient) -> None:
    start_task(client)
    # The older SDK sends x-acs-action and x-acs-version equal to its signed parameters: served.
    same = {"x-acs-action": "GetMPUTaskStatus", "x-acs-version": "2018-01-11"}
    assert client.get("/?" + urlencode(rpc_v1()), headers=same).status_code == 200
    # An unsigned header that differs from the signed parameter, or stands in for a missing one: refused.
    for action, headers in (
        ("GetMPUTaskStatus", {"x-acs-action": "StopMPUTask"}),
        (None, {"x-acs-action": "StopMPUTask"}),
        ("GetMPUTaskStatus", {"x-acs-version": "2099-01-01"}),
    ):
        status, code, message = code_of(client.get("/?" + urlencode(rpc_v1(action)), headers=headers))
        assert (status, code) == (400, "IncompleteSignature") and next(iter(headers)) in message
    assert state_of(client) != "ended"


def test_common_parameters_given_twice_with_different_values_are_refused(client: FlaskClient) -> None:
    start_task(client)
    twice: list[tuple[str, str]] = rpc_v1(**{"Action": "StopMPUTask"})  # signed, but ambiguous
    status, code, message = code_of(client.get("/?" + urlencode(twice)))
    assert (status, code) == (400, "InvalidParameter") and "Action" in message
    for name in ("AccessKeyId", "SignatureNonce", "Signature"):
        pairs: list[Any] = [*rpc_v1(), (name, "other")]
        status, code, message = code_of(client.get("/?" + urlencode(pairs)))
        assert (status, code) == (400, "InvalidParameter") and name in message
    assert state_of(client) != "ended"
