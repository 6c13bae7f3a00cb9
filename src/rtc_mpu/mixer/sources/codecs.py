"""What aiortc accepts from Janus: H.264 offered without ``fmtp``.

Janus 1.1.2 offers a *remote publisher's* H.264 (a task's ``.mix``, an ingest: both are fed plain RTP,
:mod:`rtc_mpu.mixer.output.rtc`) with no ``profile-level-id`` and no ``packetization-mode``: its
request check declares a remote publisher's ``h264_profile`` a boolean, so none can be given.
Per RFC 6184 that means packetization-mode 0, which aiortc does not list, so its answer would refuse
the video. :func:`accept_unlabelled_h264` adds the entry; aiortc's depacketizer takes single NAL
units and FU-A either way, and its decoder any profile.
"""

from __future__ import annotations

from aiortc.codecs import CODECS
from aiortc.rtcrtpparameters import RTCRtpCodecParameters


def accept_unlabelled_h264() -> None:
    """Make aiortc accept H.264 offered without ``fmtp`` (packetization-mode 0, no
    ``profile-level-id``), as Janus 1.1.2 offers a remote publisher's H.264 such as a task's mix
    (:mod:`rtc_mpu.mixer.output.rtc`). aiortc only lists packetization-mode 1; its depacketizer
    takes single NAL units and FU-A either way, and its decoder any profile. Idempotent; it changes
    aiortc's module-level codec list, so every peer connection of the process accepts it."""
    video = CODECS["video"]
    if any(
        c.mimeType.lower() == "video/h264" and c.parameters.get("packetization-mode", "0") == "0"
        for c in video
    ):
        return
    used = {c.payloadType for c in video if c.payloadType is not None}
    payload_type = next(pt for pt in range(96, 128, 2) if pt not in used and pt + 1 not in used)
    video.append(
        RTCRtpCodecParameters(
            mimeType="video/H264",
            clockRate=90000,
            payloadType=payload_type,
            parameters={"packetization-mode": "0", "profile-level-id": "42e01f"},
        )
    )
    video.append(
        RTCRtpCodecParameters(
            mimeType="video/rtx",
            clockRate=90000,
            payloadType=payload_type + 1,
            parameters={"apt": payload_type},
        )
    )


__all__ = ["accept_unlabelled_h264"]
