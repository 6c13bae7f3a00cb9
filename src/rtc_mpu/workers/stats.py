"""A running task's output statistics, as its worker reports them in each heartbeat.

The worker (:mod:`rtc_mpu.workers.mix_runner`) writes a :class:`TaskStats` with every heartbeat
(:meth:`rtc_mpu.workers.store.TaskStore.heartbeat`); the store keeps its JSON in the task record; the
REST API shows it as the task's ``stats`` object, the RPC dialect shows its overlay problems and
voice activity, and ``/metrics`` sums its counters over the active tasks.

The JSON object (:meth:`TaskStats.to_dict`) is part of the REST API (``TaskOut.stats``): its keys are
the field names below, except in :class:`VadSnapshot` (``ts`` and ``levels``, the keys of the SEI
payload of :meth:`rtc_mpu.mixer.audio.vad.VadReport.to_json`). Nothing here imports the mixer, so the
API can read statistics without loading it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field


def _count(data: Mapping[str, object], key: str) -> int:
    """``data[key]`` as a count (0 when absent).

    Raises:
        ValueError: not an integer >= 0.
    """
    value = data.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"stats.{key} must be an integer >= 0, got {value!r}")
    return value


def _strings(value: object, where: str) -> tuple[str, ...]:
    """A JSON array of strings as a tuple.

    Raises:
        ValueError: not a list of strings.
    """
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{where} must be a list of strings, got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class VadSnapshot:
    """The latest voice-activity report of a task (``ReportVad``).

    Attributes:
        ts_ms: media time of the report in milliseconds from the start of the mix (JSON ``ts``).
        speaker: the loudest speaking user, or None when nobody speaks.
        speaking: the speaking users, loudest first.
        levels_dbfs: every user the mixer knows -> smoothed audio level in dBFS, rounded to 0.1 dB,
            -100.0 = silence (JSON ``levels``).
    """

    ts_ms: int
    speaker: str | None = None
    speaking: tuple[str, ...] = ()
    levels_dbfs: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """The JSON object: ``{"ts", "speaker", "speaking", "levels"}``."""
        return {
            "ts": self.ts_ms,
            "speaker": self.speaker,
            "speaking": list(self.speaking),
            "levels": dict(self.levels_dbfs),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> VadSnapshot:
        """Inverse of :meth:`to_dict` (also reads the SEI payload of
        :meth:`rtc_mpu.mixer.audio.vad.VadReport.to_json`, parsed).

        Raises:
            ValueError: a member is missing or of the wrong type.
        """
        ts, speaker, levels = data.get("ts"), data.get("speaker"), data.get("levels", {})
        if isinstance(ts, bool) or not isinstance(ts, int):
            raise ValueError(f"stats.vad.ts must be an integer (ms), got {ts!r}")
        if speaker is not None and not isinstance(speaker, str):
            raise ValueError(f"stats.vad.speaker must be a string or null, got {speaker!r}")
        if not isinstance(levels, dict) or not all(
            isinstance(user, str) and isinstance(level, int | float) and not isinstance(level, bool)
            for user, level in levels.items()
        ):
            raise ValueError(f"stats.vad.levels must map user ids to numbers (dBFS), got {levels!r}")
        return cls(
            ts_ms=ts,
            speaker=speaker,
            speaking=_strings(data.get("speaking", []), "stats.vad.speaking"),
            levels_dbfs={user: float(level) for user, level in levels.items()},
        )


#: States of one output (:class:`OutputStats.state`).
OUTPUT_STATES = ("connecting", "connected", "reconnecting", "failed", "ended")


@dataclass(frozen=True)
class OutputStats:
    """One output of a task as its worker last reported it.

    Attributes:
        output_id: the output's id (``o1``, ...; :mod:`rtc_mpu.spec.outputs`).
        kind: ``rtmp``, ``record``, ``hls`` or ``snapshot``.
        state: one of :data:`OUTPUT_STATES`.
        bytes_written: payload bytes handed to this output's container since the worker claimed the task.
        bitrate_bps: bit/s written over the last few seconds.
        reconnects: reconnections that succeeded.
        dropped_video_frames: video frames this output did not get (disconnected, behind, or waiting
            for a keyframe).
        dropped_audio_blocks: audio blocks this output did not get.
        files: recording files finished so far (``record``), snapshots taken (``snapshot``), else 0.
        error: the last error, redacted (no stream key), or None.
    """

    output_id: str
    kind: str
    state: str = "connecting"
    bytes_written: int = 0
    bitrate_bps: int = 0
    reconnects: int = 0
    dropped_video_frames: int = 0
    dropped_audio_blocks: int = 0
    files: int = 0
    error: str | None = None

    def to_dict(self) -> dict[str, object]:
        """The JSON object, keys named as the fields."""
        return {
            "output_id": self.output_id,
            "kind": self.kind,
            "state": self.state,
            "bytes_written": self.bytes_written,
            "bitrate_bps": self.bitrate_bps,
            "reconnects": self.reconnects,
            "dropped_video_frames": self.dropped_video_frames,
            "dropped_audio_blocks": self.dropped_audio_blocks,
            "files": self.files,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> OutputStats:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: a member is missing or of the wrong type.
        """
        output_id, kind, state, error = (
            data.get("output_id"),
            data.get("kind"),
            data.get("state"),
            data.get("error"),
        )
        if not isinstance(output_id, str) or not isinstance(kind, str):
            raise ValueError(
                f"stats.outputs[].output_id and kind must be strings, got {output_id!r}, {kind!r}"
            )
        if state not in OUTPUT_STATES:
            raise ValueError(f"stats.outputs[].state must be one of {OUTPUT_STATES}, got {state!r}")
        if error is not None and not isinstance(error, str):
            raise ValueError(f"stats.outputs[].error must be a string or null, got {error!r}")
        return cls(
            output_id=output_id,
            kind=kind,
            state=str(state),
            bytes_written=_count(data, "bytes_written"),
            bitrate_bps=_count(data, "bitrate_bps"),
            reconnects=_count(data, "reconnects"),
            dropped_video_frames=_count(data, "dropped_video_frames"),
            dropped_audio_blocks=_count(data, "dropped_audio_blocks"),
            files=_count(data, "files"),
            error=error,
        )


@dataclass(frozen=True)
class TaskStats:
    """What a task's pipeline did so far, as last reported by its worker (counts since the worker
    claimed the task: a restart on another worker starts again from 0).

    Attributes:
        video_frames: video frames handed to the encoder.
        dropped_video_frames: video frames due but not delivered (encoding lagged, the media clock
            was late, or the push was reconnecting).
        audio_blocks: audio blocks encoded (1024 samples each).
        dropped_audio_blocks: audio blocks mixed but not delivered (the push was reconnecting).
        sink_reconnects: reconnections of the RTMP push that succeeded.
        layout_changes: how many times the layout or the assignment of users to panes changed.
        mixed_audio_users: the users whose audio is in the mix.
        overlay_problems: overlays that cannot be drawn, by wire name (``Watermarks.1``), with why.
        vad: the latest voice-activity report, or None (``ReportVad`` off, or no report yet).
        sei_messages: voice-activity SEI messages put into the video (``PayloadType`` 1).
        outputs: each output's own state and counters (several outputs per task), in output order.
        av_offsets_ms: per user whose audio and camera carry timing (a live channel), how much later
            the mixer places their audio than their picture on the output timeline, in ms, rounded to
            0.1 (positive = audio late; lip sync, issue 17); users without that timing are absent.
    """

    video_frames: int = 0
    dropped_video_frames: int = 0
    audio_blocks: int = 0
    dropped_audio_blocks: int = 0
    sink_reconnects: int = 0
    layout_changes: int = 0
    mixed_audio_users: tuple[str, ...] = ()
    overlay_problems: dict[str, str] = field(default_factory=dict)
    vad: VadSnapshot | None = None
    sei_messages: int = 0
    outputs: tuple[OutputStats, ...] = ()
    av_offsets_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """The JSON object (the REST API's ``stats``), keys named as the fields."""
        return {
            "video_frames": self.video_frames,
            "dropped_video_frames": self.dropped_video_frames,
            "audio_blocks": self.audio_blocks,
            "dropped_audio_blocks": self.dropped_audio_blocks,
            "sink_reconnects": self.sink_reconnects,
            "layout_changes": self.layout_changes,
            "mixed_audio_users": list(self.mixed_audio_users),
            "overlay_problems": dict(self.overlay_problems),
            "vad": None if self.vad is None else self.vad.to_dict(),
            "sei_messages": self.sei_messages,
            "outputs": [output.to_dict() for output in self.outputs],
            "av_offsets_ms": dict(self.av_offsets_ms),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> TaskStats:
        """Inverse of :meth:`to_dict`. Members missing (a record of an older version) take their
        defaults; unknown members are ignored.

        Raises:
            ValueError: a member has the wrong type (a count that is not an integer >= 0, ...).
        """
        problems = data.get("overlay_problems", {})
        if not isinstance(problems, dict) or not all(
            isinstance(name, str) and isinstance(reason, str) for name, reason in problems.items()
        ):
            raise ValueError(f"stats.overlay_problems must map names to reasons, got {problems!r}")
        outputs = data.get("outputs", [])
        if not isinstance(outputs, list) or not all(isinstance(item, dict) for item in outputs):
            raise ValueError(f"stats.outputs must be a list of objects, got {outputs!r}")
        vad = data.get("vad")
        if vad is not None and not isinstance(vad, dict):
            raise ValueError(f"stats.vad must be an object or null, got {vad!r}")
        offsets = data.get("av_offsets_ms", {})
        if not isinstance(offsets, dict) or not all(
            isinstance(user, str)
            and isinstance(offset, int | float)
            and not isinstance(offset, bool)
            and math.isfinite(offset)
            for user, offset in offsets.items()
        ):
            raise ValueError(f"stats.av_offsets_ms must map user ids to finite numbers (ms), got {offsets!r}")
        return cls(
            video_frames=_count(data, "video_frames"),
            dropped_video_frames=_count(data, "dropped_video_frames"),
            audio_blocks=_count(data, "audio_blocks"),
            dropped_audio_blocks=_count(data, "dropped_audio_blocks"),
            sink_reconnects=_count(data, "sink_reconnects"),
            layout_changes=_count(data, "layout_changes"),
            mixed_audio_users=_strings(data.get("mixed_audio_users", []), "stats.mixed_audio_users"),
            overlay_problems=dict(problems),
            vad=None if vad is None else VadSnapshot.from_dict(vad),
            sei_messages=_count(data, "sei_messages"),
            outputs=tuple(OutputStats.from_dict(item) for item in outputs),
            av_offsets_ms={user: float(offset) for user, offset in offsets.items()},
        )

    def to_json(self) -> str:
        """Compact JSON of :meth:`to_dict` (no NaN: every number is finite)."""
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> TaskStats:
        """Inverse of :meth:`to_json`.

        Raises:
            ValueError: not JSON, not an object, or a member of the wrong type (as :meth:`from_dict`).
        """
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"stats must be a JSON object, got {type(data).__name__}")
        return cls.from_dict(data)
