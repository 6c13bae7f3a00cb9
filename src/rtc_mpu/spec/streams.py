"""Users' video streams as plain data: which stream a pane shows (:class:`SourceType`), the key of one
stream (:class:`StreamKey`) and the screen-share naming convention of the channel.

Screen sharing convention: a user's screen share is a second video stream of the same user, with
``SourceType.SHARE_SCREEN``; a source that sees it as a separate publisher named
``<UserId>`` + :data:`SCREEN_SHARE_SUFFIX` reports it under ``<UserId>`` with that source type
(:func:`stream_key_for_publisher`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

#: Suffix of a publisher id that carries another user's screen share: ``alice`` + ``.screen``.
SCREEN_SHARE_SUFFIX = ".screen"


class SourceType(enum.StrEnum):
    """Which of a user's video streams a pane shows (StartMPUTask ``SourceType``)."""

    CAMERA = "camera"
    SHARE_SCREEN = "shareScreen"


@dataclass(frozen=True, order=True)
class StreamKey:
    """One video stream of one user: ``(user_id, source_type)``."""

    user_id: str
    source_type: SourceType = SourceType.CAMERA


def stream_key_for_publisher(publisher_id: str) -> StreamKey:
    """Map a channel publisher id to the stream it carries, following the screen-share convention."""
    if publisher_id.endswith(SCREEN_SHARE_SUFFIX) and len(publisher_id) > len(SCREEN_SHARE_SUFFIX):
        return StreamKey(publisher_id[: -len(SCREEN_SHARE_SUFFIX)], SourceType.SHARE_SCREEN)
    return StreamKey(publisher_id, SourceType.CAMERA)
