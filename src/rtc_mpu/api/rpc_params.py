"""Parser of MPU RPC request parameters: the flat ``Name.N.Field=value`` pairs of the query string and
the form body, turned into the nested snake_case structure that the schemas (api/schemas.py) validate.

This module is pure (no Flask): give it every ``(name, value)`` pair of the query string and of the
form body, in any order, and it returns the business parameters. It never raises anything but
:class:`RpcParamError`, whatever the input.

Rules (the vendor's MPU API, 2018-01-11 "Wire formats"):

* Names are ASCII ``[A-Za-z0-9_]`` segments joined by dots, at most 200 characters. The signature and
  protocol parameters (:data:`COMMON_PARAMS`: Action, Version, Signature, ...) are dropped. Keys become
  snake_case (:func:`snake_case`: ``StreamURL`` -> ``stream_url``, ``ZOrder`` -> ``z_order``).
* A segment that starts with a digit is a 1-based list index: 1..:data:`MAX_LIST_INDEX`, no leading zero.
  A name has at most 4 list indices. ``Name=v`` is a scalar, ``Name.N=v`` a list of scalars,
  ``Name.N.Field=v`` a list of dicts, ``Name.N.Sub.M.Field=v`` lists of dicts in lists of dicts, and
  ``Struct.Field=v`` (``EnhancedParam.EnablePortraitSegmentation``) a dict.
* Lists come out in index order with holes dropped (``LayoutIds.1`` and ``LayoutIds.3`` give a list of
  two), so position ``k`` of a list is wire index ``k + 1`` only when the request has no holes; error
  paths turned back into wire names by :func:`wire_name` assume no holes.
* The same name (or two names that resolve to the same place, such as ``StreamURL`` and ``stream_url``)
  may be given twice with the same value (a client that repeats the query in the form), never with two
  different values. A name cannot be both a scalar and a list or dict, nor a list and a dict.
* Leaves are typed by their name (:data:`INT_FIELDS`, :data:`FLOAT_FIELDS`, the ``Enable*`` fields of
  EnhancedParam as booleans: ``true``/``false`` in any case, ``1``/``0``; its BackgroundPath is a
  string). Integers are decimal with an
  optional sign and at most 18 digits; floats are decimal (with an optional exponent) and finite. A value
  that does not convert stays the original string, so that the schema layer reports it with its own
  error code; ``FontSize=12.0`` therefore stays ``"12.0"``.

The old SDK's encoding of pane images and texts (aliyun-python-sdk-rtc, ``UserPanes.`` + str(i) + str(j)
+ ``.Field``, without a dot between the pane index i and the item index j, and with the same prefix for
images and texts) is lossy. Our answer to it:

* Inside ``UserPanes`` only, ``UserPanes.<digits>.<Field>``, where Field is an image or text field (Url,
  Display, Width, Height; Text, FontType, FontSize, FontColor, BorderColor, BorderWidth, Box, BoxColor,
  BoxBorderWidth, Alpha; X, Y, ZOrder), is an item of the old encoding. Pane-level fields (PaneId,
  UserId, SourceType, SegmentType) and any other field keep the ordinary meaning ``UserPanes.<i>.<Field>``.
* The digits are split into a pane index i (1..16) and an item index j (1..:data:`MAX_LIST_INDEX`), with
  no leading zero in either. When several splits are possible (``111`` is pane 1 item 11 or pane 11
  item 1), the one whose pane index has a pane-level field in the same request (``UserPanes.<i>.UserId``
  and the like) wins; when both or neither do, the request is refused as ambiguous, and the client must
  use the dotted form ``UserPanes.<i>.Images.<j>.<Field>``. A single digit (``UserPanes.1.X``) has no
  split and is refused. The rule relies on every pane having a pane-level field (UserId is required
  anyway): pane 1 with a UserId and eleven images, and pane 11 with an image but no pane-level field,
  would read ``111`` as pane 1 item 11.
* Url, Display, Width, Height make an image (``UserPanes.<i>.Images.<j>``); Text and the font, border,
  box and Alpha fields make a text (``UserPanes.<i>.Texts.<j>``). X, Y and ZOrder go to the text at
  (i, j) when the request has a text field there (old or dotted form: the old SDK writes a text's X over
  the image's at the same (i, j), so the value that arrives is the text's), else to the image.
* Both encodings may be mixed, even for the same pane: the items merge, and the same field given in both
  forms with different values is refused like any duplicate.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "COMMON_PARAMS",
    "FLOAT_FIELDS",
    "INT_FIELDS",
    "MAX_LIST_INDEX",
    "MAX_NAME_LENGTH",
    "MAX_PARAMS",
    "MAX_VALUE_LENGTH",
    "RpcParamError",
    "parse_rpc_params",
    "snake_case",
    "wire_name",
]

#: Most (name, value) pairs in one request (query string and form together, common params included).
MAX_PARAMS = 1000
#: Highest 1-based list index.
MAX_LIST_INDEX = 64
#: Longest value, in characters.
MAX_VALUE_LENGTH = 4096
#: Longest parameter name, in characters.
MAX_NAME_LENGTH = 200
#: Most list indices in one name (``Name.N.Sub.M.Field`` has two).
MAX_DEPTH = 4
#: Highest pane index of the old SDK's ``UserPanes.<i><j>.Field`` encoding.
MAX_OLD_PANE_INDEX = 16

#: Signature and protocol parameters, not business ones: what aliyunsdkcore (request.py,
#: auth/composer/rpc_signature_composer.py, the STS signers) and alibabacloud_tea_openapi (client.py)
#: add to an RPC request, and the account fields that the platform fills in for the caller.
COMMON_PARAMS: frozenset[str] = frozenset(
    {
        "Action",
        "Version",
        "Format",
        "RegionId",
        "Timestamp",
        "SignatureMethod",
        "SignatureVersion",
        "SignatureNonce",
        "SignatureType",
        "AccessKeyId",
        "Signature",
        "SecurityToken",
        "BearerToken",
        "OwnerId",
        "OwnerAccount",
        "ResourceOwnerId",
        "ResourceOwnerAccount",
        "callerUid",
        "callerType",
        "callerBid",
        "callerParentId",
    }
)

#: A text overlay's integer style fields.
_TEXT_STYLE_FIELDS = (
    "font_type",
    "font_size",
    "font_color",
    "border_color",
    "border_width",
    "box",
    "box_color",
    "box_border_width",
)

#: Leaf names (snake_case) whose values are integers.
INT_FIELDS: frozenset[str] = frozenset(
    {
        "media_encode",
        "background_color",
        "crop_mode",
        "mix_mode",
        "stream_type",
        "payload_type",
        "report_vad",
        "vad_interval",
        "rtp_ext_info",
        "time_stamp_ref",
        "task_type",
        "task_mode",
        "pane_id",
        "segment_type",
        "display",
        "z_order",
        *_TEXT_STYLE_FIELDS,
        "audio_mix_count",
        "layout_id",
        "major_pane",
        "page_num",
        "page_size",
        "layout_ids",
    }
)

#: Leaf names (snake_case) whose values are floats.
FLOAT_FIELDS: frozenset[str] = frozenset({"x", "y", "width", "height", "alpha"})

#: The struct whose ``enable_*`` fields are booleans.
_BOOL_STRUCT = "enhanced_param"

#: Fields of a pane itself (UserPanes.N.<field>), never items of the old encoding.
_PANE_FIELDS = frozenset({"pane_id", "user_id", "source_type", "segment_type"})
_IMAGE_FIELDS = frozenset({"url", "display", "width", "height"})
_TEXT_FIELDS = frozenset({"text", *_TEXT_STYLE_FIELDS, "alpha"})
_SHARED_ITEM_FIELDS = frozenset({"x", "y", "z_order"})
_ITEM_FIELDS = _IMAGE_FIELDS | _TEXT_FIELDS | _SHARED_ITEM_FIELDS

#: Every wire name we know: the parameters of mpu-api.md, the request fields of both SDKs' MPU actions
#: (StartMPUTask, UpdateMPUTask, UpdateMPULayout, CreateMPULayout, ModifyMPULayout, DeleteMPULayout,
#: DescribeMPULayoutInfoList, GetMPUTaskStatus, StopMPUTask) and the common parameters.
_KNOWN_WIRE_NAMES = (
    *sorted(COMMON_PARAMS),
    "AppId",
    "ChannelId",
    "TaskId",
    "StreamURL",
    "TaskProfile",
    "MixMode",
    "StreamType",
    "SourceType",
    "CropMode",
    "MediaEncode",
    "BackgroundColor",
    "LayoutIds",
    "SubSpecUsers",
    "SubSpecAudioUsers",
    "SubSpecCameraUsers",
    "SubSpecShareScreenUsers",
    "UnsubSpecAudioUsers",
    "UnsubSpecCameraUsers",
    "UnsubSpecShareScreenUsers",
    "UserPanes",
    "PaneId",
    "UserId",
    "SegmentType",
    "Images",
    "Texts",
    "Url",
    "Display",
    "X",
    "Y",
    "Width",
    "Height",
    "ZOrder",
    "Text",
    "FontType",
    "FontSize",
    "FontColor",
    "BorderColor",
    "BorderWidth",
    "Box",
    "BoxColor",
    "BoxBorderWidth",
    "Alpha",
    "Backgrounds",
    "Watermarks",
    "ClockWidgets",
    "PayloadType",
    "ReportVad",
    "VadInterval",
    "RtpExtInfo",
    "TimeStampRef",
    "TaskType",
    "TaskMode",
    "EnhancedParam",
    "EnablePortraitSegmentation",
    "EnableVirtualConference",
    "EnableCartoonPortrait",
    "EnableVoiceChanger",
    "EnableUserPaneBackground",
    "BackgroundPath",
    "Name",
    "LayoutId",
    "Panes",
    "MajorPane",
    "AudioMixCount",
    "PageNum",
    "PageSize",
)

_NAME_CHARS = re.compile(r"[A-Za-z0-9_.]+")
_INT = re.compile(r"[+-]?[0-9]{1,18}")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SNAKE_1 = re.compile(r"([A-Z]+)([A-Z][a-z])")
_SNAKE_2 = re.compile(r"([a-z0-9])([A-Z])")


class RpcParamError(ValueError):
    """A request's parameters cannot be read: ``code`` is the error code to answer with
    (``InvalidParameter``), ``message`` says why and ``field`` is the wire name at fault, if one is."""

    def __init__(self, message: str, field: str | None = None, code: str = "InvalidParameter") -> None:
        """An error with ``message``, about the wire name ``field`` (or None), answered as ``code``."""
        super().__init__(message)
        self.code: str = code
        self.message: str = message
        self.field: str | None = field


def snake_case(name: str) -> str:
    """``name`` (a CamelCase wire name segment) in snake_case: ``StreamURL`` -> ``stream_url``,
    ``ZOrder`` -> ``z_order``, ``AppId`` -> ``app_id``; a snake_case name comes back unchanged."""
    return _SNAKE_2.sub(r"\1_\2", _SNAKE_1.sub(r"\1_\2", name)).lower()


#: snake_case -> wire name, for :func:`wire_name`.
_WIRE_BY_SNAKE: dict[str, str] = {snake_case(wire): wire for wire in _KNOWN_WIRE_NAMES}


def wire_name(path: Sequence[str | int]) -> str:
    """The dotted wire name of a snake_case ``path`` from a validation error: keys from the table of
    known names (``stream_url`` -> ``StreamURL``, else CamelCase of the key), list positions 0-based in
    and 1-based out: ``["user_panes", 0, "images", 1, "x"]`` -> ``"UserPanes.1.Images.2.X"``."""
    parts: list[str] = []
    for key in path:
        if isinstance(key, int):
            parts.append(str(key + 1))
        else:
            known = _WIRE_BY_SNAKE.get(key)
            parts.append(
                known if known is not None else "".join(p[:1].upper() + p[1:] for p in key.split("_"))
            )
    return ".".join(parts)


# ---------------------------------------------------------------------------------------------------------
# The tree of raw values


@dataclass
class _Leaf:
    value: str
    name: str


@dataclass
class _Branch:
    is_list: bool
    name: str
    children: dict[str | int, _Leaf | _Branch] = field(default_factory=dict)


_Path = tuple[str | int, ...]


def _insert(root: _Branch, path: _Path, value: str, name: str) -> None:
    node = root
    for depth, key in enumerate(path):
        child = node.children.get(key)
        if depth == len(path) - 1:
            if child is None:
                node.children[key] = _Leaf(value, name)
            elif isinstance(child, _Leaf):
                if child.value != value:
                    other = f" and {child.name}" if child.name != name else ""
                    raise RpcParamError(f"{name}{other} given twice with different values", name)
            else:
                raise RpcParamError(
                    f"{name} is used both as a value and as a {'list' if child.is_list else 'structure'} "
                    f"({child.name})",
                    name,
                )
            return
        wants_list = isinstance(path[depth + 1], int)
        if child is None:
            child = _Branch(wants_list, name)
            node.children[key] = child
        elif isinstance(child, _Leaf):
            kind = "list" if wants_list else "structure"
            raise RpcParamError(f"{name} is used both as a {kind} and as a value ({child.name})", name)
        elif child.is_list != wants_list:
            raise RpcParamError(
                f"{name} and {child.name} use the same name as a list and as a structure", name
            )
        node = child


def _typed(value: str, key: str | None, in_bool_struct: bool) -> Any:
    if key is None:
        return value
    if in_bool_struct and key.startswith("enable_"):
        lowered = value.lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
        return value
    if key in INT_FIELDS:
        return int(value) if _INT.fullmatch(value) else value
    if key in FLOAT_FIELDS and _FLOAT.fullmatch(value):
        number = float(value)
        return number if math.isfinite(number) else value
    return value


def _build(node: _Branch | _Leaf, key: str | None, in_bool_struct: bool) -> Any:
    if isinstance(node, _Leaf):
        return _typed(node.value, key, in_bool_struct)
    if node.is_list:
        return [_build(node.children[index], key, in_bool_struct) for index in sorted(node.children, key=int)]
    return _build_struct(node, in_bool_struct)


def _build_struct(node: _Branch, in_bool_struct: bool) -> dict[str, Any]:
    return {
        str(name): _build(child, str(name), in_bool_struct or name == _BOOL_STRUCT)
        for name, child in node.children.items()
    }


# ---------------------------------------------------------------------------------------------------------
# Names


def _index(segment: str, name: str, limit: int = MAX_LIST_INDEX) -> int:
    if not segment.isdigit():
        raise RpcParamError(f"{name}: list index {segment!r} is not a number", name)
    if segment[0] == "0":
        raise RpcParamError(f"{name}: list index {segment!r} must start at 1, without leading zeros", name)
    if len(segment) > 4 or int(segment) > limit:
        raise RpcParamError(f"{name}: list index {segment} is above {limit}", name)
    return int(segment)


def _segments(name: str) -> list[str]:
    if not name:
        raise RpcParamError("empty parameter name", None)
    if len(name) > MAX_NAME_LENGTH:
        raise RpcParamError(
            f"parameter name longer than {MAX_NAME_LENGTH} characters", name[:MAX_NAME_LENGTH]
        )
    if not _NAME_CHARS.fullmatch(name):
        raise RpcParamError(f"{name}: a parameter name has only A-Z a-z 0-9 _ and dots", name)
    segments = name.split(".")
    if "" in segments:
        raise RpcParamError(f"{name}: empty segment in the parameter name", name)
    if segments[0][0].isdigit():
        raise RpcParamError(f"{name}: a parameter name starts with a letter", name)
    if sum(1 for s in segments if s[0].isdigit()) > MAX_DEPTH:
        raise RpcParamError(f"{name}: more than {MAX_DEPTH} list levels", name)
    return segments


def _path(segments: list[str], name: str) -> _Path:
    return tuple(_index(s, name) if s[0].isdigit() else snake_case(s) for s in segments)


@dataclass
class _OldItem:
    """``UserPanes.<digits>.<field>`` of the old SDK, before its digits are split."""

    name: str
    value: str
    digits: str
    field: str
    order: int


def _splits(digits: str) -> list[tuple[int, int]]:
    found: list[tuple[int, int]] = []
    for cut in range(1, len(digits)):
        pane, item = digits[:cut], digits[cut:]
        if pane[0] == "0" or item[0] == "0" or len(pane) > 2 or len(item) > 2:
            continue
        if int(pane) <= MAX_OLD_PANE_INDEX and int(item) <= MAX_LIST_INDEX:
            found.append((int(pane), int(item)))
    return found


def _resolve_old(item: _OldItem, panes_with_fields: set[int]) -> tuple[int, int]:
    candidates = _splits(item.digits)
    kind = "Texts" if item.field in _TEXT_FIELDS else "Images"
    dotted = f"UserPanes.<i>.{kind}.<j>.{item.name.rsplit('.', 1)[-1]}"
    if item.field in _SHARED_ITEM_FIELDS:
        dotted += f" (or UserPanes.<i>.Texts.<j>.{item.name.rsplit('.', 1)[-1]} for a text)"
    if not candidates:
        raise RpcParamError(
            f"{item.name}: {item.digits} is not a pane index (1-{MAX_OLD_PANE_INDEX}) followed by an item "
            f"index (1-{MAX_LIST_INDEX}); use the dotted form {dotted}",
            item.name,
        )
    if len(candidates) == 1:
        return candidates[0]
    known = [c for c in candidates if c[0] in panes_with_fields]
    if len(known) == 1:
        return known[0]
    readings = " or ".join(f"pane {i} item {j}" for i, j in candidates)
    raise RpcParamError(
        f"{item.name}: the index {item.digits} is ambiguous ({readings}); use the dotted form {dotted} "
        "(or Texts for a text)",
        item.name,
    )


# ---------------------------------------------------------------------------------------------------------


def parse_rpc_params(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The business parameters of a request, from every query-string and form ``(name, value)`` pair:
    a dict with snake_case keys, lists for ``Name.N``, dicts for ``Name.N.Field`` and ``Struct.Field``,
    typed leaves (int, float, bool or the original string), common parameters dropped (module docstring).

    Raises:
        RpcParamError: a bad or conflicting name, a bad index, a value too long, too many pairs.
    """
    plain: list[tuple[_Path, str, str, int]] = []
    old: list[_OldItem] = []
    panes_with_fields: set[int] = set()
    text_items: set[tuple[int, int]] = set()
    count = 0
    try:
        iterator = iter(pairs)
    except TypeError:
        raise RpcParamError("the parameters are not a list of (name, value) pairs") from None
    for pair in iterator:
        count += 1
        if count > MAX_PARAMS:
            raise RpcParamError(f"more than {MAX_PARAMS} parameters")
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise RpcParamError("a parameter is not a (name, value) pair")
        name, value = pair
        if not isinstance(name, str) or not isinstance(value, str):
            raise RpcParamError("a parameter name or value is not text")
        if len(value) > MAX_VALUE_LENGTH:
            shown = name[:MAX_NAME_LENGTH]
            raise RpcParamError(f"{shown}: value longer than {MAX_VALUE_LENGTH} characters", shown)
        if name in COMMON_PARAMS:
            continue
        segments = _segments(name)
        if (
            len(segments) == 3
            and snake_case(segments[0]) == "user_panes"
            and segments[1][0].isdigit()
            and snake_case(segments[2]) in _ITEM_FIELDS
        ):
            if not segments[1].isdigit():
                _index(segments[1], name)  # raises: not a number
            old.append(_OldItem(name, value, segments[1], snake_case(segments[2]), count))
            continue
        path = _path(segments, name)
        if (
            path[0] == "user_panes"
            and len(path) == 3
            and isinstance(path[1], int)
            and path[2] in _PANE_FIELDS
        ):
            panes_with_fields.add(path[1])
        if (
            len(path) == 5
            and path[0] == "user_panes"
            and path[2] == "texts"
            and isinstance(path[1], int)
            and isinstance(path[3], int)
            and path[4] in _TEXT_FIELDS
        ):
            text_items.add((path[1], path[3]))
        plain.append((path, value, name, count))

    resolved: list[tuple[_OldItem, int, int]] = []
    for item in old:
        pane, index = _resolve_old(item, panes_with_fields)
        if item.field in _TEXT_FIELDS:
            text_items.add((pane, index))
        resolved.append((item, pane, index))
    for item, pane, index in resolved:
        is_text = item.field in _TEXT_FIELDS or (
            item.field in _SHARED_ITEM_FIELDS and (pane, index) in text_items
        )
        path = ("user_panes", pane, "texts" if is_text else "images", index, item.field)
        plain.append((path, item.value, item.name, item.order))

    root = _Branch(False, "")
    for path, value, name, _ in sorted(plain, key=lambda entry: entry[3]):
        _insert(root, path, value, name)
    return _build_struct(root, False)
