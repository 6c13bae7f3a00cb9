"""The encoder: H.264 (libx264) + AAC-LC, encoded once per task with one media clock, into packets that
every output muxes (FLV over RTMP, a recording, HLS: :mod:`rtc_mpu.mixer.output.muxers`).

Settings follow docs/architecture.md "Media timing": ``tune=zerolatency``, constant bitrate through the
VBV (``maxrate = bufsize = bitrate``, ``nal-hrd=cbr``), an IDR keyframe exactly every
``gop_seconds`` (forced on the media clock's frame index; scene-cut keyframes off), no B-frames;
AAC-LC at 48 kHz stereo (FFmpeg's ``fast`` coder from :data:`AAC_FAST_CODER_MIN_BITRATE` up). Video
pts are frame indices in ``1/fps`` time_base units; audio pts are sample indices in ``1/48000``
units; both start at 0 on the same clock, so they start together.

An output may also start mid-clock (:class:`rtc_mpu.mixer.output.outputs.Output` reconnects a failed
push, or joins late): it takes packets from the next keyframe on (asked for with
:meth:`PacketEncoder.force_keyframe`), whose pts is the clock's ``index`` > 0; FFmpeg's FLV muxer writes
such timestamps as they are (it only shifts negative ones), so the RTMP timestamps of a reconnected
push continue the media clock across the gap.

Voice activity rides in the video as H.264 SEI (user data unregistered,
:mod:`rtc_mpu.mixer.output.sei`): pass the JSON of a :class:`rtc_mpu.mixer.audio.vad.VadReport` as
``encode_video(..., sei=...)``; the SEI NAL unit goes into the access unit of that frame.  libx264 (through
FFmpeg, also with ``GLOBAL_HEADER``, where SPS/PPS go to the extradata) returns Annex B packets; the NAL
unit is inserted in Annex B form and the FLV/MP4 muxers convert the whole access unit to
length-prefixed AVCC themselves.

Blocking (encodes): call it from one worker thread, never from the event loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import av
from av.codec.context import Flags
from av.container import OutputContainer
from av.packet import Packet
from av.stream import Stream
from av.video.frame import PictureType
from av.video.reformatter import ColorRange, Colorspace

from rtc_mpu.mixer.audio.mixer import BLOCK_SAMPLES, CHANNELS, SAMPLE_RATE
from rtc_mpu.mixer.output.sei import build_sei_nal, insert_sei_nal

#: Keyframe interval (GOP) in seconds (docs/architecture.md).
DEFAULT_GOP_SECONDS = 2
#: x264 speed preset; "veryfast" is the usual live-streaming trade-off on a CPU.
DEFAULT_PRESET = "veryfast"
#: Least AAC bitrate (bit/s) encoded with FFmpeg's ``fast`` coder; lower ones use ``twoloop``. FFmpeg's
#: own comparison (commit fcb681ac, "aacenc: use the fast coder as the default", 2018): twoloop sounds
#: decent at low bitrates, but at higher ones worse than fast while costing much more CPU. Measured
#: here (FFmpeg 7 in PyAV 18, stereo 48 kHz, 128 kbit/s): 0.13 vs 0.34 CPU-ms per 1024-sample block
#: (0.006 vs 0.016 CPU-s/s), same size, waveform SNR 15.9 vs 15.1 dB on tones and noise (issue 18).
AAC_FAST_CODER_MIN_BITRATE = 96_000
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
        profile: x264 profile, ``high`` (the default) or ``main`` (a task published back over WebRTC:
            browsers decode main, not high, there).
        threads: libx264's threads; 0 lets x264 choose (1.5 per core; with ``zerolatency`` each
            frame is cut into that many slices encoded in parallel). 1 encodes each frame on the
            encode thread alone: the least CPU per frame, for a node running a mix per core or more
            (:func:`rtc_mpu.workers.settings.encoder_threads`).
    """

    width: int
    height: int
    fps: int
    video_bitrate: int
    audio_bitrate: int
    gop_seconds: int = DEFAULT_GOP_SECONDS
    preset: str = DEFAULT_PRESET
    audio: bool = True
    profile: str = "high"
    threads: int = 0

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
        pcm: audio only: the mixed blocks (fltp stereo 48 kHz, pts in ``1/48000``) the encoder took
            since its previous packet, in order, for an output that encodes them to another codec
            itself (the ``rtc`` output's Opus) instead of decoding the AAC; empty for video. Shared:
            never modified.
    """

    video: bool
    data: bytes
    pts: int
    dts: int | None
    duration: int
    time_base: Fraction
    keyframe: bool
    pcm: tuple[av.AudioFrame, ...] = field(default=(), compare=False, repr=False)

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

    The settings of the module docstring (libx264 ``zerolatency`` CBR, an IDR every
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
        self._pending_pcm: list[av.AudioFrame] = []
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
            fast = settings.audio_bitrate >= AAC_FAST_CODER_MIN_BITRATE
            aac.codec_context.options = {"aac_coder": "fast" if fast else "twoloop"}
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
        :meth:`force_keyframe`. ``sei``: UTF-8 JSON bytes
        (:meth:`rtc_mpu.mixer.audio.vad.VadReport.to_json`), sent as an H.264 SEI user data
        unregistered message (:data:`rtc_mpu.mixer.output.sei.SEI_UUID`) in this frame's access unit,
        before its first slice (the packet whose pts equals ``index``, whenever the encoder returns it).

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
        self._pending_pcm.append(frame)
        packets = self._packets(self._audio.encode(frame), video=False)
        if packets:
            packets[0] = dataclasses.replace(packets[0], pcm=tuple(self._pending_pcm))
            self._pending_pcm.clear()
        return packets

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
            "profile": s.profile,
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
    ctx.thread_count = s.threads
    return stream
