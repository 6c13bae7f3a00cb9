"""Running one ingest on a worker (issue 19): claim, open the media, publish it, follow the host.

1. **Claim** (:meth:`rtc_mpu.workers.ingest_store.IngestStore.claim`): a fencing token and the
   ingest's cost on this node; none when another worker runs it or it ended.
2. **Open** the URL (:func:`rtc_mpu.ingest.media.open_media`, on a thread: FFmpeg holds the GIL less
   there): refused, unreachable or undecodable media ends the ingest ``failed`` with the reason, and
   nothing is published.
3. **Publish** as the ingest's UserId (:class:`rtc_mpu.ingest.publisher.IngestPublisher`); after a
   takeover the previous worker's publisher is replaced. A UserId already in the channel fails the
   ingest (``InvalidIngest.UserInUse``).
4. **Play** (:class:`rtc_mpu.ingest.player.Player`) from where the ingest is: its start position, or,
   after a takeover, the position the previous worker reported plus the time since (a co-watching
   audience's local players went on meanwhile), paused if it was paused. The host's controls are
   read every :data:`CONTROL_POLL_SECONDS` and the progress written every
   :data:`HEARTBEAT_SECONDS` (the heartbeat that keeps the claim).
5. **End**: at the end of the media (``ended``), on a failure (``failed``), on a stop; a lost claim
   (another worker took over) stops the player and changes nothing. A worker that shuts down
   (SIGTERM) gives the ingest back at once and queues it again: another worker resumes it within
   about a second, replacing the publisher.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rtc_mpu.ingest.media import MediaError, describe, open_media
from rtc_mpu.ingest.player import Player, Progress
from rtc_mpu.ingest.publisher import IngestPublisher, UserInUseError
from rtc_mpu.mixer.sources.janus import ChannelConfig
from rtc_mpu.mixer.sources.janus_http import JanusError
from rtc_mpu.spec.ingest import IngestState
from rtc_mpu.workers.ingest_store import INGEST_COST, IngestRecord, IngestStore
from rtc_mpu.workers.settings import WorkerSettings

log = logging.getLogger(__name__)

#: Seconds between two reads of the host's controls (a control takes effect within about this).
CONTROL_POLL_SECONDS = 0.05
#: Seconds between two heartbeats (progress written, claim kept).
HEARTBEAT_SECONDS = 1.0
#: Seconds FFmpeg may take to open the media, and to answer a read.
OPEN_TIMEOUT_SECONDS = 10.0
READ_TIMEOUT_SECONDS = 10.0


@dataclass
class IngestSettings:
    """Where media may come from (``MPU_MEDIA_DIR``, ``MPU_ALLOW_PRIVATE_URLS``) and the longest
    play (``MPU_INGEST_MAX_SECONDS``, 0 = no limit)."""

    media_dir: Path | None = None
    allow_private: bool = False
    max_seconds: float | None = None

    @classmethod
    def from_env(cls, environ: dict[str, str]) -> IngestSettings:
        """From ``MPU_*`` variables.

        Raises:
            ValueError: ``MPU_INGEST_MAX_SECONDS`` is not a number.
        """
        media = environ.get("MPU_MEDIA_DIR", "").strip()
        limit = float(environ.get("MPU_INGEST_MAX_SECONDS", "0") or 0)
        on = ("1", "true", "yes")
        private = (
            environ.get("MPU_ALLOW_PRIVATE_URLS", "") in on
            or environ.get("MPU_IMAGE_ALLOW_PRIVATE", "") in on
        )
        return cls(Path(media) if media else None, private, limit if limit > 0 else None)


def resume_point(record: IngestRecord, now: float) -> tuple[float, bool]:
    """Where a claimed ingest starts (media seconds) and whether paused: the spec's start the first
    time; after a takeover the last reported position plus the time since if it was playing."""
    if record.restarts == 0 and record.position_at == 0:
        return record.spec.start_at_seconds, record.control.get("state") == "paused"
    paused = record.state is IngestState.PAUSED
    return record.position_now_ms(now) / 1000, paused


class IngestRunner:
    """Runs one ingest to its end (see the module docstring).

    Args:
        store: the ingest records.
        app_id, ingest_id: the ingest.
        worker: this worker's name for the record.
        settings: where Janus is and the secrets (the workers').
        ingest_settings: media directory, private URLs, longest play.
        node, capacity: the node whose capacity it takes (None: no accounting).
        draining: whether this worker shuts down: then the ingest is given back (its publisher stays
            in the room until the next worker replaces it) and queued again with ``requeue``.
        requeue: ``(app_id, ingest_id)``: queue it again.
    """

    def __init__(
        self,
        store: IngestStore,
        app_id: str,
        ingest_id: str,
        worker: str,
        settings: WorkerSettings,
        ingest_settings: IngestSettings,
        *,
        node: str | None = None,
        capacity: float | None = None,
        draining: Callable[[], bool] | None = None,
        requeue: Callable[[str, str], None] | None = None,
    ) -> None:
        self.store = store
        self.draining = draining
        self.requeue = requeue
        self.app_id = app_id
        self.ingest_id = ingest_id
        self.worker = worker
        self.settings = settings
        self.ingest_settings = ingest_settings
        self.node = node
        self.capacity = capacity
        #: The claim did not fit this node.
        self.no_capacity = False
        self._seek_id: object = None
        self._handed_over = False

    def run(self) -> str:
        """Run the ingest to its end; how it ended, for Flower."""
        return asyncio.run(self._run())

    async def _run(self) -> str:
        claimed = self.store.claim(
            self.app_id, self.ingest_id, self.worker, node=self.node, capacity=self.capacity
        )
        if claimed == "no_capacity":
            self.no_capacity = True
            return "no capacity"
        if claimed is None or isinstance(claimed, str):
            return "not claimed (running elsewhere, stopped or ended)"
        fence = claimed
        record = self.store.get(self.app_id, self.ingest_id)
        spec = record.spec
        start_seconds, paused = resume_point(record, time.time())
        self._report(fence, {"state": IngestState.STARTING, "reason": "opening the media"})
        try:
            container = await asyncio.to_thread(
                open_media,
                spec.url,
                media_dir=self.ingest_settings.media_dir,
                allow_private=self.ingest_settings.allow_private,
                open_timeout_seconds=OPEN_TIMEOUT_SECONDS,
                read_timeout_seconds=READ_TIMEOUT_SECONDS,
            )
            info = describe(container)
        except MediaError as exc:
            return self._end(fence, IngestState.FAILED, f"{exc.code}: {exc.message}", {})
        if info.duration_ms is not None and start_seconds * 1000 >= info.duration_ms:
            start_seconds = 0.0 if spec.loop else max(0.0, info.duration_ms / 1000 - 0.5)
        channel = ChannelConfig(
            self.settings.janus_url,
            self.app_id,
            spec.channel_id,
            api_secret=self.settings.janus_api_secret,
            token_secret=self.settings.token_secret,
            token_signature=self.settings.token_signature,
        )
        players: list[Player] = []

        def keyframe() -> None:
            for player in players:
                player.request_keyframe()

        publisher = IngestPublisher(
            channel, spec.user_id, video=info.has_video, audio=info.has_audio, on_keyframe_request=keyframe
        )
        try:
            await publisher.add(replace=record.restarts > 0 or record.position_at > 0)
        except UserInUseError:
            container.close()
            return self._end(
                fence,
                IngestState.FAILED,
                f"InvalidIngest.UserInUse: {spec.user_id!r} already publishes in the channel",
                {},
            )
        except (JanusError, OSError) as exc:
            container.close()
            return self._end(fence, IngestState.FAILED, f"Janus refused the publisher: {exc}", {})
        player = Player(
            container,
            info,
            publisher,
            ingest_id=spec.ingest_id,
            url=spec.url,
            loop=spec.loop,
            start_at_seconds=start_seconds,
            volume_percent=record.volume_percent,
            paused=paused,
            max_seconds=self.ingest_settings.max_seconds,
        )
        players.append(player)
        applied = record.control_version if record.restarts > 0 or record.position_at > 0 else 0
        if applied:
            self._seek_id = record.control.get("seek_id")
        player.start()
        try:
            return await self._follow(fence, player, applied)
        finally:
            player.stop()
            if not self._handed_over:  # handed over: the next worker replaces the publisher
                await publisher.remove()

    async def _follow(self, fence: int, player: Player, applied: int) -> str:
        """Heartbeat, apply the host's controls, until the player ends, a stop, or the claim is lost."""
        next_beat = 0.0
        version_key = self.store.record_key(self.app_id, self.ingest_id)
        while True:
            if player.finished.is_set():
                final = player.progress()
                return self._end(fence, final.state, final.reason, self._fields(final))
            if self.draining is not None and self.draining():
                progress = self._fields(player.progress())
                player.stop()
                self._handed_over = True
                if (
                    self.store.release(self.app_id, self.ingest_id, fence, progress)
                    and self.requeue is not None
                ):
                    self.requeue(self.app_id, self.ingest_id)
                return "handed over: this worker is shutting down"
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + HEARTBEAT_SECONDS
                answer = self.store.heartbeat(
                    self.app_id,
                    self.ingest_id,
                    fence,
                    self._fields(player.progress()),
                    node=self.node,
                    cost=INGEST_COST,
                )
                if answer is None:
                    log.warning("ingest %s/%s: another worker took it over", self.app_id, self.ingest_id)
                    return "fenced out: another worker took over"
                control, stop = answer
                if stop:
                    player.stop()
                    return self._end(fence, IngestState.ENDED, "stopped", self._fields(player.progress()))
                applied = self._apply(player, control, applied)
            else:
                raw = self.store.client.hget(version_key, "control")
                if raw is not None:
                    control = json.loads(raw)
                    if isinstance(control, dict):
                        applied = self._apply(player, control, applied)
            await asyncio.sleep(CONTROL_POLL_SECONDS)

    def _apply(self, player: Player, control: dict[str, Any], applied: int) -> int:
        """Apply the host's controls newer than version ``applied``; the version applied now. A seek
        is applied once (its ``seek_id``); state and volume are idempotent."""
        version = int(control.get("version", 0))
        if version <= applied:
            return applied
        if "volume" in control:
            player.set_volume(int(control["volume"]))
        seek_id = control.get("seek_id")
        if control.get("position_seconds") is not None and seek_id is not None and seek_id != self._seek_id:
            self._seek_id = seek_id
            player.seek(float(control["position_seconds"]))
        state = control.get("state")
        if state == "paused":
            player.pause()
        elif state == "playing":
            player.play()
        return version

    def _fields(self, progress: Progress) -> dict[str, Any]:
        return {
            "state": progress.state,
            "reason": progress.reason
            or ("playing" if progress.state is IngestState.PLAYING else str(progress.state)),
            "position_ms": progress.position_ms,
            "position_at": progress.sent_at,
            "duration_ms": progress.duration_ms,
            "volume": progress.volume_percent,
        }

    def _report(self, fence: int, fields: dict[str, Any]) -> None:
        self.store.heartbeat(self.app_id, self.ingest_id, fence, fields, node=self.node, cost=INGEST_COST)

    def _end(self, fence: int, state: IngestState, reason: str, fields: dict[str, Any]) -> str:
        if state not in (IngestState.ENDED, IngestState.FAILED):
            state = IngestState.ENDED
        done = self.store.finish(self.app_id, self.ingest_id, fence, state, reason, fields)
        log.info("ingest %s/%s %s: %s", self.app_id, self.ingest_id, state, reason)
        return f"{state}: {reason}" if done else "fenced out: another worker took over"


__all__ = ["IngestRunner", "IngestSettings", "resume_point"]
