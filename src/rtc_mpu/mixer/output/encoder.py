"""The encoder: H.264 (libx264) + AAC-LC into FLV (or another container), with one media clock.

Settings follow docs/architecture.md "Media timing": ``tune=zerolatency``, constant bitrate through the
VBV (``maxrate = bufsize = bitrate``, ``nal-hrd=cbr``), an IDR keyframe exactly every
``gop_seconds`` (forced on the media clock's frame index; scene-cut keyframes off), no B-frames;
AAC-LC at 48 kHz stereo. Video pts are frame indices in ``1/fps`` time_base units; audio pts are
sample indices in ``1/48000`` units; both start at 0 on the same clock, so they start together.

An encoder may also start mid-clock (:class:`rtc_mpu.mixer.output.push.PushConnection` reconnects a
failed push with a new encoder): its first frame then has pts ``index`` > 0 and is forced to be an IDR
keyframe, so a player can start decoding at once; FFmpeg's FLV muxer writes such timestamps as they
are (it only shifts negative ones), so the RTMP timestamps of a reconnected push continue the media
clock across the gap.

Voice activity rides in the video as H.264 SEI (user data unregistered,
:mod:`rtc_mpu.mixer.output.sei`): pass the JSON of a :class:`rtc_mpu.mixer.audio.vad.VadReport` as
``encode_video(..., sei=...)``; the SEI NAL unit goes into the access unit of that frame.  libx264 (through
FFmpeg, also with ``GLOBAL_HEADER`` for FLV/MP4, where SPS/PPS go to the extradata) returns Annex B packets;
the NAL unit is inserted in Annex B form and the FLV/MP4 muxers convert the whole access unit to
length-prefixed AVCC themselves.

Blocking (encodes and network writes): call it from one worker thread, never from the event loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Protocol

import av
from av.codec.context import Flags
from av.container import OutputContainer
from av.packet import Packet
from av.stream import Stream
from av.video.frame import PictureType
from av.video.reformatter import ColorRange, Colorspace

from rtc_mpu.mixer.audio.mixer import BLOCK_SAMPLES, CHANNELS, SAMPLE_RATE
from rtc_mpu.mixer.output.sei import build_sei_nal, insert_sei_nal
from rtc_mpu.mixer.output.sinks import SinkError, SinkTarget, open_sink, start_sink

#: Keyframe interval (GOP) in seconds (docs/architecture.md).
DEFAULT_GOP_SECONDS = 2
#: x264 speed preset; "veryfast" is the usual live-streaming trade-off on a CPU.
DEFAULT_PRESET = "veryfast"
#: Most SEI NAL units waiting for their frame's packet; older ones are dropped (x264 with zerolatency
#: and no B-frames returns every frame's packet at once, so at most one ever waits).
MAX_PENDING_SEI = 64


@dataclass(frozen=True)
class EncoderSettings:
    """What to encode.

    Attributes:
        width, height: picture size in pixels (0 for audio only).
        fps: frames per second (0 for audio only).
        video_bitrate: H.264 bitrate in bit/s.
        audio_bitrate: AAC bitrate in bit/s.
        gop_seconds: keyframe interval in seconds.
        preset: x264 preset.
        audio: whether the output has an audio stream (False: a video-only relay).
    """

    width: int
    height: int
    fps: int
    video_bitrate: int
    audio_bitrate: int
    gop_seconds: int = DEFAULT_GOP_SECONDS
    preset: str = DEFAULT_PRESET
    audio: bool = True

    @property
    def has_video(self) -> bool:
        """False for an audio-only output."""
        return self.width > 0 and self.fps > 0

    @property
    def gop_frames(self) -> int:
        """Keyframe interval in frames."""
        return self.gop_seconds * self.fps


@dataclass
class EncoderStats:
    """What the encoder has done so far.

    Attributes:
        video_frames: video frames encoded.
        last_video_pts: clock frame index of the last video frame (-1: none yet); indices must increase.
    """

    video_frames: int = 0
    last_video_pts: int = field(default=-1)


class Encoder(Protocol):
    """What the pipeline needs of an encoder: :class:`MediaEncoder`, or a stand-in in tests.

    Every method blocks (encoding, network writes) and raises
    :class:`rtc_mpu.mixer.output.sinks.SinkError` when the endpoint fails; all of them run on one
    worker thread, never on the event loop.
    """

    def encode_video(self, frame: av.VideoFrame, index: int, sei: bytes | None = None) -> None:
        """Encode and write the frame at clock frame ``index`` (see :meth:`MediaEncoder.encode_video`)."""

    def encode_audio(self, frame: av.AudioFrame) -> None:
        """Encode and write one mixed audio block (see :meth:`MediaEncoder.encode_audio`)."""

    def close(self) -> None:
        """Flush, write the trailer and close the sink."""

    def abort(self) -> None:
        """Close the sink without flushing, ignoring errors (the endpoint already failed)."""


#: Makes and opens an encoder (connects to the sink); blocking. :class:`MediaEncoder` itself is one.
EncoderFactory = Callable[[EncoderSettings, SinkTarget], Encoder]


class MediaEncoder:
    """Encodes composited video frames and mixed audio blocks and writes them to a sink.

    The constructor opens the sink: it connects to the RTMP server (or creates the file) and writes
    the container header, so a refused or unreachable endpoint fails here, not at the first frame.
    Blocking, without a timeout of its own (see :mod:`rtc_mpu.mixer.output.sinks`): construct it off the
    event loop.

    Raises:
        SinkError: from the constructor (cannot connect / create) and from every write (the
            endpoint failed mid-stream).
    """

    def __init__(self, settings: EncoderSettings, target: SinkTarget) -> None:
        self.settings = settings
        self.target = target
        self.stats = EncoderStats()
        self._closed = False
        #: SEI NAL units (Annex B) by the pts (video_time_base units) of the frame they belong to.
        self._pending_sei: dict[int, bytes] = {}
        #: time_base of video pts; fixed here because the muxer rewrites the stream's (FLV: 1/1000).
        self.video_time_base = Fraction(1, settings.fps) if settings.has_video else Fraction(1, 1)
        self._container: OutputContainer = open_sink(target)
        try:
            self._video = self._add_video() if settings.has_video else None
            self._audio = (
                self._container.add_stream("aac", rate=SAMPLE_RATE, layout="stereo")
                if settings.audio
                else None
            )
            if self._audio is not None:
                self._audio.bit_rate = settings.audio_bitrate
                self._audio.time_base = Fraction(1, SAMPLE_RATE)
            # Both encoders are open here, so their extradata (SPS/PPS, AudioSpecificConfig) is known.
            start_sink(self._container, target)
        except BaseException:
            with contextlib.suppress(av.error.FFmpegError, OSError):
                self._container.close()
            raise

    def _add_video(self) -> av.VideoStream:
        return _add_x264(self._container, self.settings, self.video_time_base)

    def encode_video(self, frame: av.VideoFrame, index: int, sei: bytes | None = None) -> None:
        """Encode a composited frame at media-clock frame ``index`` (pts = index, in 1/fps units).

        A frame whose index is a multiple of the GOP is forced to be an IDR keyframe, and so is this
        encoder's first frame whatever its index (a push reconnected mid-clock starts with an IDR).

        Args:
            frame: the composited picture; its ``pts``, ``time_base`` and ``pict_type`` are set here.
            index: media-clock frame index; pts in video_time_base units.
            sei: UTF-8 JSON bytes (:meth:`rtc_mpu.mixer.audio.vad.VadReport.to_json`), sent as an
                H.264 SEI user data unregistered message (:data:`rtc_mpu.mixer.output.sei.SEI_UUID`)
                in this frame's access unit, before its first slice (the packet whose pts equals
                ``index``, whenever the encoder returns it).

        Raises:
            SinkError: the sink failed.
            ValueError: if ``index`` does not increase or this is an audio-only output.
        """
        if self._video is None:
            raise ValueError("this output has no video stream")
        if index <= self.stats.last_video_pts:
            raise ValueError(f"video pts {index} does not increase (last {self.stats.last_video_pts})")
        nal = build_sei_nal(sei) if sei is not None else None
        frame.pts = index
        frame.time_base = self.video_time_base
        keyframe = index % self.settings.gop_frames == 0 or self.stats.video_frames == 0
        frame.pict_type = PictureType.I if keyframe else PictureType.NONE
        self.stats.last_video_pts = index
        self.stats.video_frames += 1
        if nal is not None:
            self._pending_sei[index] = nal
            while len(self._pending_sei) > MAX_PENDING_SEI:
                del self._pending_sei[next(iter(self._pending_sei))]
        self._write(self._video.encode(frame))

    def encode_audio(self, frame: av.AudioFrame) -> None:
        """Encode one mixed block: fltp stereo 48 kHz, BLOCK_SAMPLES samples, pts in 1/48000 units.

        Raises:
            SinkError: the sink failed.
        """
        if frame.samples != BLOCK_SAMPLES or len(frame.layout.channels) != CHANNELS:
            raise ValueError(f"audio blocks must be {BLOCK_SAMPLES} samples x {CHANNELS} channels")
        if self._audio is None:  # a video-only output: the block is dropped
            return
        self._write(self._audio.encode(frame))

    def _with_sei(self, packet: Packet[Stream]) -> Packet[Stream]:
        """``packet``, or a copy with the pending SEI NAL unit of its pts inserted before the first slice.

        The copy keeps pts, dts, duration, time_base, stream, the keyframe flag and the side data.
        """
        if packet.pts is None or not self._pending_sei:
            return packet
        nal = self._pending_sei.pop(packet.pts, None)
        if nal is None:
            return packet
        data = insert_sei_nal(bytes(packet), nal)
        out: Packet[Stream] = Packet(len(data))  # av_new_packet: FFmpeg's input padding, zeroed
        out.update(data)
        out.stream = packet.stream
        out.time_base = packet.time_base
        out.pts, out.dts, out.duration = packet.pts, packet.dts, packet.duration
        out.is_keyframe = packet.is_keyframe
        for side_data in packet.iter_sidedata():
            out.set_sidedata(side_data)
        return out

    def _write(self, packets: Sequence[Packet[Stream]]) -> None:
        for packet in packets:
            if packet.stream is self._video:
                packet = self._with_sei(packet)
            try:
                self._container.mux(packet)
            except (av.error.FFmpegError, OSError) as exc:
                raise self._failed("write", exc) from None

    def abort(self) -> None:
        """Close the sink without flushing the encoders or caring whether the trailer is written,
        ignoring every error: for an endpoint that already failed. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(av.error.FFmpegError, OSError):
            self._container.close()

    def close(self) -> None:
        """Flush both encoders (``encode(None)``), write the trailer and close the sink. Idempotent.

        Raises:
            SinkError: the final writes failed (the container is closed anyway).
        """
        if self._closed:
            return
        self._closed = True
        try:
            if self._video is not None:
                self._write(self._video.encode(None))
            if self._audio is not None:
                self._write(self._audio.encode(None))
        finally:
            try:
                self._container.close()
            except (av.error.FFmpegError, OSError) as exc:
                raise self._failed("closing", exc) from None

    def _failed(self, what: str, exc: Exception) -> SinkError:
        """The :class:`SinkError` for ``exc``, raised when ``what`` (``write``, ``closing``) failed: a
        failure of the sink, not of the push URL."""
        return SinkError(
            f"{what} failed: {getattr(exc, 'strerror', exc)}", self.target.display, push_url_problem=False
        )


@dataclass(frozen=True)
class EncodedPacket:
    """One encoded packet, immutable and shared by every output (each muxes its own copy).

    Attributes:
        video: True for H.264, False for AAC.
        data: the payload (H.264 Annex B access unit, with its SEI; raw AAC frame).
        pts, dts: in ``time_base`` units (video: the clock's frame index in ``1/fps``; audio: samples in
            ``1/48000``); dts may be None.
        duration: in ``time_base`` units (0 if unknown).
        time_base: of pts, dts and duration.
        keyframe: an IDR access unit (a decoder can start here); True for every audio packet.
    """

    video: bool
    data: bytes
    pts: int
    dts: int | None
    duration: int
    time_base: Fraction
    keyframe: bool

    @property
    def seconds(self) -> float:
        """pts in seconds."""
        return float(self.pts * self.time_base)


class StreamTemplates:
    """The open encoders' streams (codec parameters and extradata: SPS/PPS, AudioSpecificConfig), which
    a muxer copies with ``OutputContainer.add_stream_from_template``. Read-only after the encoder opened;
    holding this object keeps the streams alive, so a muxer may open after the encoder has finished."""

    def __init__(self, container: OutputContainer, video: Stream | None, audio: Stream | None) -> None:
        self._container = container  # owns the streams below
        self.video = video
        self.audio = audio


class PacketEncoder:
    """Encodes composited video frames and mixed audio blocks once, into :class:`EncodedPacket` lists
    that any number of outputs mux (:mod:`rtc_mpu.mixer.output.outputs`).

    The same settings as :class:`MediaEncoder` (libx264 ``zerolatency`` CBR, an IDR every
    ``gop_seconds`` on the media clock, no B-frames; AAC-LC 48 kHz stereo; voice activity as SEI), with
    global headers, so the codec parameters (:attr:`templates`) are known once the constructor returns
    and every container (FLV, MP4, MKV, HLS) takes them. The encoders live in FFmpeg's ``null`` muxer,
    which writes nothing. Blocking: use it from one worker thread, except :meth:`force_keyframe`.
    """

    def __init__(self, settings: EncoderSettings) -> None:
        self.settings = settings
        self.stats = EncoderStats()
        self.video_time_base = Fraction(1, settings.fps) if settings.has_video else Fraction(1, 1)
        self._pending_sei: dict[int, bytes] = {}
        self._force = False
        self._flushed = False
        self._container: OutputContainer = av.open("null", mode="w", format="null")
        video: av.VideoStream | None = None
        audio: av.AudioStream | None = None
        if settings.has_video:
            video = _add_x264(self._container, settings, self.video_time_base)
            video.codec_context.flags |= Flags.global_header
        if settings.audio:
            aac = self._container.add_stream("aac", rate=SAMPLE_RATE, layout="stereo")
            aac.bit_rate = settings.audio_bitrate
            aac.time_base = Fraction(1, SAMPLE_RATE)
            aac.codec_context.flags |= Flags.global_header
            audio = aac
        self._container.start_encoding()  # opens both encoders: extradata known
        self._video, self._audio = video, audio
        #: What muxers copy their streams from.
        self.templates = StreamTemplates(self._container, video, audio)

    def force_keyframe(self) -> None:
        """Make the next video frame an IDR keyframe (an output joined or reconnected). Thread-safe."""
        self._force = True

    def encode_video(self, frame: av.VideoFrame, index: int, sei: bytes | None = None) -> list[EncodedPacket]:
        """Encode the frame at media-clock frame ``index`` (pts = index, in ``1/fps`` units).

        An IDR is forced at every GOP multiple of ``index``, at the first frame and after
        :meth:`force_keyframe`. ``sei``: as :meth:`MediaEncoder.encode_video`.

        Returns:
            the packets the encoder returned (with zerolatency: this frame's).

        Raises:
            ValueError: ``index`` does not increase, or there is no video stream.
        """
        if self._video is None:
            raise ValueError("this encoder has no video stream")
        if index <= self.stats.last_video_pts:
            raise ValueError(f"video pts {index} does not increase (last {self.stats.last_video_pts})")
        frame.pts = index
        frame.time_base = self.video_time_base
        forced, self._force = self._force, False
        keyframe = forced or index % self.settings.gop_frames == 0 or self.stats.video_frames == 0
        frame.pict_type = PictureType.I if keyframe else PictureType.NONE
        self.stats.last_video_pts = index
        self.stats.video_frames += 1
        if sei is not None:
            self._pending_sei[index] = build_sei_nal(sei)
            while len(self._pending_sei) > MAX_PENDING_SEI:
                del self._pending_sei[next(iter(self._pending_sei))]
        return self._packets(self._video.encode(frame), video=True)

    def encode_audio(self, frame: av.AudioFrame) -> list[EncodedPacket]:
        """Encode one mixed block (fltp stereo 48 kHz, BLOCK_SAMPLES samples, pts in ``1/48000``);
        nothing for a video-only encoder.

        Raises:
            ValueError: the block has the wrong size or layout.
        """
        if frame.samples != BLOCK_SAMPLES or len(frame.layout.channels) != CHANNELS:
            raise ValueError(f"audio blocks must be {BLOCK_SAMPLES} samples x {CHANNELS} channels")
        if self._audio is None:
            return []
        return self._packets(self._audio.encode(frame), video=False)

    def flush(self) -> list[EncodedPacket]:
        """Flush both encoders (``encode(None)``); the packets still inside them. Idempotent."""
        if self._flushed:
            return []
        self._flushed = True
        out: list[EncodedPacket] = []
        if self._video is not None:
            out += self._packets(self._video.encode(None), video=True)
        if self._audio is not None:
            out += self._packets(self._audio.encode(None), video=False)
        return out

    def _packets(self, packets: Sequence[Packet[Stream]], *, video: bool) -> list[EncodedPacket]:
        out = []
        for packet in packets:
            if packet.pts is None:
                continue
            data = bytes(packet)
            nal = self._pending_sei.pop(packet.pts, None) if video else None
            if nal is not None:
                data = insert_sei_nal(data, nal)
            out.append(
                EncodedPacket(
                    video=video,
                    data=data,
                    pts=packet.pts,
                    dts=packet.dts,
                    duration=packet.duration or 0,
                    time_base=packet.time_base
                    or (self.video_time_base if video else Fraction(1, SAMPLE_RATE)),
                    keyframe=packet.is_keyframe or not video,
                )
            )
        return out


def _add_x264(container: OutputContainer, s: EncoderSettings, time_base: Fraction) -> av.VideoStream:
    """Add the libx264 stream of ``s`` (see the module docstring) to ``container``."""
    gop = s.gop_frames
    stream = container.add_stream(
        "libx264",
        rate=s.fps,
        options={
            "preset": s.preset,
            "tune": "zerolatency",
            "profile": "high",
            "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:nal-hrd=cbr:force-cfr=1",
            "forced-idr": "1",
            "bf": "0",
        },
    )
    stream.width = s.width
    stream.height = s.height
    stream.pix_fmt = "yuv420p"
    stream.time_base = time_base
    ctx = stream.codec_context
    ctx.time_base = time_base
    ctx.framerate = Fraction(s.fps, 1)
    ctx.bit_rate = s.video_bitrate
    ctx.options = {**ctx.options, "maxrate": str(s.video_bitrate), "bufsize": str(s.video_bitrate)}
    ctx.colorspace = Colorspace.ITU601
    ctx.color_range = ColorRange.MPEG
    ctx.color_primaries = 6  # SMPTE 170M (BT.601 525), ISO/IEC 23091-2
    ctx.color_trc = 6  # SMPTE 170M
    ctx.thread_count = 0
    return stream
