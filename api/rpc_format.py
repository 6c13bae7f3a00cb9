"""Answers of the MPU RPC dialect: JSON (default) or XML (``Format=XML``), and the vendor's error shape
``{"RequestId", "HostId", "Code", "Message"}`` (shared/reference/mpu-api.md "Errors").

XML follows the vendor's convention: the root element is ``<Action>Response`` (``Error`` for errors),
a dict becomes child elements, a list repeats its parent's element name for each item.
"""

from __future__ import annotations

import json
from typing import Any
from xml.etree import ElementTree

from flask import Response

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
        element.text = str(value)


def to_xml(root: str, body: dict[str, Any]) -> bytes:
    """``body`` as an XML document whose root element is ``root`` (UTF-8, with a declaration)."""
    element = ElementTree.Element(root)
    _fill(element, body)
    text: bytes = ElementTree.tostring(element, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + text


def render(body: dict[str, Any], status: int, xml_root: str | None) -> Response:
    """A response with ``body`` as JSON, or as XML under ``xml_root`` when that is given."""
    if xml_root is not None:
        return Response(to_xml(xml_root, body), status=status, mimetype="application/xml")
    return Response(
        json.dumps(body, ensure_ascii=False, separators=(",", ":")),
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
