"""Opening an ingest's media: the URL's address rules, FFmpeg's protocol and format whitelists, and
what the media holds.

Only what :func:`rtc_mpu.spec.ingest.check_url` allows reaches FFmpeg, and FFmpeg may only use the
protocols of that scheme (``protocol_whitelist``: no ``file``, ``concat``, ``subfile``, ``data``...
from a network URL, whatever an HLS playlist says) and the demuxers of the formats we take
(``format_whitelist``). A URL's host must resolve to public addresses only, unless
``allow_private`` (``MPU_ALLOW_PRIVATE_URLS=1``); FFmpeg resolves the name again when it connects
(a DNS answer that changes in between is not caught), and the segments an HLS playlist names on
other hosts are not checked (both in README, "Watch together").
"""

from __future__ import annotations

import concurrent.futures
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import av
import av.container

from rtc_mpu.spec.ingest import MEDIA_SCHEME
from rtc_mpu.spec.urls import is_public_address

#: FFmpeg protocols each scheme may use (HLS fetches its playlists and segments over http(s) and
#: may decrypt them: ``crypto``).
PROTOCOLS = {
    "http": "http,tcp,hls,crypto",
    "https": "http,https,tcp,tls,hls,crypto",
    "rtmp": "rtmp,tcp",
    "rtmps": "rtmps,rtmp,tcp,tls",
    MEDIA_SCHEME: "file",
}
#: Demuxers an ingest may use: MP4/MOV, Matroska/WebM, FLV (RTMP), HLS and its MPEG-TS segments,
#: and plain audio files.
FORMATS = "mov,matroska,flv,live_flv,hls,mpegts,aac,mp3,ogg,wav"
#: Seconds a host name may take to resolve.
RESOLVE_TIMEOUT_SECONDS = 3.0


class MediaError(Exception):
    """The media cannot be ingested.

    Attributes:
        code: ``InvalidIngest.Url`` (address or file refused), ``InvalidIngest.Unreachable``
            (cannot be opened or read), ``InvalidIngest.Codec`` (nothing we can decode), or
            ``InvalidIngest.TooLong``.
        message: why, for the ingest's ``reason``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class MediaInfo:
    """What an opened media holds.

    Attributes:
        has_video, has_audio: its first video / audio stream can be decoded.
        video_codec, audio_codec: FFmpeg's codec names ("" without that stream).
        width, height: the video's size in pixels (0 without video).
        duration_ms: its duration in milliseconds, or None (a live stream).
    """

    has_video: bool
    has_audio: bool
    video_codec: str
    audio_codec: str
    width: int
    height: int
    duration_ms: int | None


def media_path(url: str, media_dir: Path | None) -> Path:
    """The file of ``media:NAME`` under ``media_dir``.

    Raises:
        MediaError: no media directory is configured, or no such regular file in it (symbolic links
            that leave the directory are refused).
    """
    if media_dir is None:
        raise MediaError("InvalidIngest.Url", "media: URLs need MPU_MEDIA_DIR on the workers")
    name = url.partition(":")[2]
    root = media_dir.resolve()
    path = (root / name).resolve()
    if path.parent != root or not path.is_file():
        raise MediaError("InvalidIngest.Url", f"no media file {name!r} in the media directory")
    return path


def check_host(url: str, allow_private: bool, timeout_seconds: float = RESOLVE_TIMEOUT_SECONDS) -> None:
    """Refuse a URL whose host resolves to a private, loopback or link-local address.

    Raises:
        MediaError: ``InvalidIngest.Url`` (a non-public address), ``InvalidIngest.Unreachable``
            (the name does not resolve in time).
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if allow_private:
        return
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        lookup = pool.submit(socket.getaddrinfo, host, parts.port or 443, type=socket.SOCK_STREAM)
        try:
            infos = lookup.result(timeout_seconds)
        except (OSError, concurrent.futures.TimeoutError) as exc:
            raise MediaError("InvalidIngest.Unreachable", f"{host!r} does not resolve: {exc}") from None
    addresses = {str(info[4][0]) for info in infos}
    refused = sorted(a for a in addresses if not is_public_address(a))
    if refused or not addresses:
        raise MediaError(
            "InvalidIngest.Url",
            f"{host!r} resolves to addresses that are not public ({', '.join(refused)}); "
            "set MPU_ALLOW_PRIVATE_URLS=1 to allow them",
        )


def open_media(
    url: str,
    *,
    media_dir: Path | None,
    allow_private: bool,
    open_timeout_seconds: float,
    read_timeout_seconds: float,
) -> av.container.InputContainer:
    """Open ``url`` for reading with the whitelists and timeouts.

    Raises:
        MediaError: refused (address, file) or unreachable (FFmpeg could not open it in time).
    """
    scheme = url.partition(":")[0].lower()
    if scheme not in PROTOCOLS:
        raise MediaError("InvalidIngest.Url", f"scheme {scheme!r} is not allowed")
    target = url
    if scheme == MEDIA_SCHEME:
        target = str(media_path(url, media_dir))
    else:
        check_host(url, allow_private)
    options: dict[str, Any] = {
        "protocol_whitelist": PROTOCOLS[scheme],
        "format_whitelist": FORMATS,
        "rw_timeout": str(int(read_timeout_seconds * 1_000_000)),
    }
    if scheme == "rtmp" or scheme == "rtmps":
        options["rtmp_live"] = "any"
    try:
        container = av.open(
            target, "r", options=options, timeout=(open_timeout_seconds, read_timeout_seconds)
        )
    except (av.error.FFmpegError, OSError) as exc:
        raise MediaError("InvalidIngest.Unreachable", f"cannot open the media: {exc}") from None
    assert isinstance(container, av.container.InputContainer)
    return container


def describe(container: av.container.InputContainer) -> MediaInfo:
    """What ``container`` holds: its first video and audio streams that FFmpeg can decode.

    Raises:
        MediaError: ``InvalidIngest.Codec``: neither a video nor an audio stream we can decode.
    """
    video = container.streams.video[0] if container.streams.video else None
    audio = container.streams.audio[0] if container.streams.audio else None
    video_ok = video is not None and _decodable(video)
    audio_ok = audio is not None and _decodable(audio)
    if not video_ok and not audio_ok:
        found = ", ".join(f"{s.type} {s.codec_context.name}" for s in container.streams if s.type) or "none"
        raise MediaError(
            "InvalidIngest.Codec", f"no video or audio stream that can be decoded (found: {found})"
        )
    duration = container.duration
    return MediaInfo(
        has_video=video_ok,
        has_audio=audio_ok,
        video_codec=video.codec_context.name if video is not None and video_ok else "",
        audio_codec=audio.codec_context.name if audio is not None and audio_ok else "",
        width=video.codec_context.width if video is not None and video_ok else 0,
        height=video.codec_context.height if video is not None and video_ok else 0,
        duration_ms=int(duration // 1000) if duration and duration > 0 else None,
    )


def _decodable(stream: av.stream.Stream) -> bool:
    try:
        codec = stream.codec_context.codec
    except (av.error.FFmpegError, ValueError, AttributeError):
        return False
    return codec is not None and codec.is_decoder and stream.codec_context.name not in ("", "none")


__all__ = ["MediaError", "MediaInfo", "check_host", "describe", "media_path", "open_media"]
