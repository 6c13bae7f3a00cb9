"""Answers of the MPU RPC dialect: JSON (default) or XML (``Format=XML``), and the vendor's error shape
``{"RequestId", "HostId", "Code", "Message"}`` (the vendor's MPU API, 2018-01-11 "Errors").

XML follows the vendor's convention: the root element is ``<Action>Response`` (``Error`` for errors),
a dict becomes child elements, a list repeats its parent's element name for each item.

Answers are always well-formed, whatever is stored: requests cannot store characters that break them
(:mod:`rtc_mpu.spec.text_rules`), and, for data stored before that rule, a character that the format cannot
carry is written as U+FFFD (the replacement character): in XML every character outside XML 1.0's
``Char`` (C0 controls but tab, newline and carriage return; lone surrogates; U+FFFE, U+FFFF), in JSON
lone surrogates (UTF-8 cannot encode them); :class:`JSONProvider` does the same for the REST answers.
"""

from __future__ import annotations

import json
import re
from typing import Any
from xml.etree import ElementTree

from flask import Response
from flask.json.provider import DefaultJSONProvider

#: HTTP statuses of the platform's signature and authorization codes (the vendor's; other codes keep
#: the status the service gives them).
VENDOR_STATUS = {
    "SignatureDoesNotMatch": 400,
    "IncompleteSignature": 400,
    "InvalidTimeStamp.Expired": 400,
    "InvalidTimeStamp.Format": 400,
    "SignatureNonceUsed": 400,
    "InvalidAccessKeyId.NotFound": 404,
    "Forbidden": 403,
}


#: Characters XML 1.0 does not allow (https://www.w3.org/TR/xml/#charsets).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
#: Lone surrogates: no UTF-8 (so no JSON answer) can carry them.
_SURROGATE = re.compile("[\ud800-\udfff]")
#: What replaces a character an answer cannot carry.
REPLACEMENT = "\ufffd"


def _xml_text(value: str) -> str:
    return _NOT_XML.sub(REPLACEMENT, value)


def json_safe(value: Any) -> Any:
    """``value`` with the lone surrogates of its strings (and keys) replaced."""
    if isinstance(value, str):
        return _SURROGATE.sub(REPLACEMENT, value)
    if isinstance(value, dict):
        return {json_safe(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


class JSONProvider(DefaultJSONProvider):
    """The app's JSON (REST answers): Flask's, with lone surrogates written as U+FFFD
    (:func:`json_safe`), so that every answer is JSON of valid Unicode whatever is stored."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        """``obj`` as JSON (lone surrogates replaced)."""
        return super().dumps(json_safe(obj), **kwargs)


def _fill(element: ElementTree.Element, value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, list):
                for entry in item:
                    _fill(ElementTree.SubElement(element, key), entry)
            else:
                _fill(ElementTree.SubElement(element, key), item)
    elif isinstance(value, bool):
        element.text = "true" if value else "false"
    elif value is not None:
        element.text = _xml_text(str(value))


def to_xml(root: str, body: dict[str, Any]) -> bytes:
    """``body`` as a well-formed XML document whose root element is ``root`` (UTF-8, with a
    declaration); characters XML cannot carry become U+FFFD (module docstring)."""
    element = ElementTree.Element(root)
    _fill(element, body)
    text: bytes = ElementTree.tostring(element, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + text


def render(body: dict[str, Any], status: int, xml_root: str | None) -> Response:
    """A response with ``body`` as JSON, or as XML under ``xml_root`` when that is given (always
    well-formed: module docstring)."""
    if xml_root is not None:
        return Response(to_xml(xml_root, body), status=status, mimetype="application/xml")
    return Response(
        json.dumps(json_safe(body), ensure_ascii=False, separators=(",", ":")),
        status=status,
        mimetype="application/json",
    )


def error_response(
    status: int, code: str, message: str, request_id: str, host_id: str, xml: bool = False
) -> Response:
    """The vendor's error answer: HTTP ``status`` (or the vendor's for a platform code) with
    ``{"RequestId", "HostId", "Code", "Message"}``."""
    body = {"RequestId": request_id, "HostId": host_id, "Code": code, "Message": message}
    return render(body, VENDOR_STATUS.get(code, status), "Error" if xml else None)
