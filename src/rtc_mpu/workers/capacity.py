"""What a mix task costs a worker node, in *units*, and how much a node can take.

**Unit**: 1.0 = one 1280x720 30 fps mix of up to 4 video inputs (TaskProfile ``4IN_720P``, MediaEncode
27), measured at :data:`UNIT_CPU` CPU-seconds per second of output. A node's capacity
(``MPU_WORKER_CAPACITY``) defaults to what its cores give mixes, :data:`USABLE_CPU_PER_CORE` each,
in units (:func:`default_capacity`): on 2 cores 3.42, three such mixes (and a small task beside them).
The capacity bench carried 4 on 2 cores at 30 fps on a channel each (machine 80 % busy, Janus and the
rest of the stack included) but dropped frames with 4 on one channel in one run of two (86 %), so the
default stops at 3 (issue 18's note; README "Benchmarks").

**Model** (CPU-seconds per output second, then divided by :data:`UNIT_CPU`)::

    cost = (ENCODE_CPU_720P30 * (width * height * fps) / (1280 * 720 * 30) + inputs * decode(pane)) / UNIT_CPU

Every constant comes from ``python -m bench.capacity --tasks 1,2,3,4 --threads`` (4 users of 640x360
30 fps per channel: three or four relays of an H.264 clip and one aiortc VP8 user; the CPU of each mix
process by thread, 1 to 4 mixes on a quiet 2-core machine; see the note of issue 18 for the runs):

- *Composite and encode*: proportional to the output's pixel rate; :data:`ENCODE_CPU_720P30` at
  1280x720 30 fps: the mix's encode thread (compositing, libx264 veryfast CBR on one thread, AAC) and
  its output thread (FLV muxing, the RTMP push).
- *Receive and decode one input* (RTP, SRTP and the jitter buffers on the event loop, video and Opus
  decoding on aiortc's decoder threads, the audio mix; inputs arrive at 30 fps whatever the output's
  fps): :data:`DECODE_CPU_360P` per 640x360 input, the event loop's and decoder threads' CPU over the 4
  users. A 1280x720 input (:data:`DECODE_CPU_720P`) was not measured again: the 360p figure scaled by
  the 720p/360p ratio measured before (0.20 / 0.09, ``bench.channel_delay``). An input is assumed to be
  about the size of its pane (canvas pixels / inputs), clamped to 360p..720p (publishers send at least
  360p; WebRTC cameras rarely send more than 720p), and its cost interpolated linearly in pixels.
- *inputs*: the TaskProfile's ``max_video_inputs`` (the capacity class the client asked for; when it
  gives none, the smallest profile that fits the encoding and the largest layout). Screen shares
  and users beyond the profile are not counted.
- *Relay* (MixMode 0) with video: one input over the whole canvas. *Audio only* (MediaEncode 0,
  TaskProfile ``Mixed_Audio``, or an audio relay): :data:`AUDIO_ONLY_COST` = 0.1 unit (Opus decoding
  and one AAC encoder; no measurement of its own).

Some costs (units): 4IN_720P at 1280x720 30 fps 1.0; 2IN_720P 0.87; 1IN_720P 0.8; 9IN_720P 1.57;
16IN_720P 2.37; 1IN_1080P at 1920x1080 30 fps 1.48; 16IN_1080P 3.05; 2IN_360P at 640x360 15 fps
(MediaEncode 1) 0.3; 1IN_360P 0.18; audio only 0.1.
"""

from __future__ import annotations

import math
import os
import random

from rtc_mpu.layouts import SpecError
from rtc_mpu.spec.task import MixMode, TaskSpec
from rtc_mpu.workers.model import TaskParams

#: CPU-seconds per second to composite and encode 1280x720 at 30 fps (libx264 veryfast CBR 2 Mbit/s on
#: one thread, AAC) and push it: ``bench.capacity --threads``, mpu-encode 0.173-0.191 + mpu-out
#: 0.006-0.008.
ENCODE_CPU_720P30 = 0.19
#: CPU-seconds per second to receive and decode one 640x360 30 fps user (RTP, SRTP, VP8 or H.264, Opus,
#: the audio mix): ``bench.capacity --threads``, (event loop 0.069-0.088 + video decoders 0.044-0.054
#: + audio decoders 0.015-0.022) / 4 users.
DECODE_CPU_360P = 0.04
#: CPU-seconds per second to receive and decode one 1280x720 30 fps user: :data:`DECODE_CPU_360P` x
#: 0.20 / 0.09 (the 720p/360p ratio ``bench.channel_delay`` measured before issue 18; not measured again).
DECODE_CPU_720P = 0.09
#: CPU-seconds per second of one unit: a 1280x720 30 fps mix of 4 inputs of 640x360.
UNIT_CPU = ENCODE_CPU_720P30 + 4 * DECODE_CPU_360P
#: Cost of an audio-only task, in units.
AUDIO_ONLY_COST = 0.1
#: CPU-seconds per second of each core that mixes may take by default; the rest is for what the model
#: does not see (Janus, Redis and nginx on the same node, publishers' bursts, start-ups, the OS). With
#: :data:`UNIT_CPU` it admits 3 unit mixes on 2 cores: ``python -m bench.capacity --tasks 1,2,3,4``
#: measured 3 at 30 fps with 0 dropped (machine 62-64 % busy), 4 at 80-86 %, on one channel once
#: with 43 frames dropped (issue 18).
USABLE_CPU_PER_CORE = 0.6
#: Units of capacity per CPU core by default (about 1.71).
UNITS_PER_CORE = USABLE_CPU_PER_CORE / UNIT_CPU
#: Seconds before a task refused for lack of capacity is delivered again (jittered +-50 %).
REQUEUE_DELAY = 2.0

_PIXELS_720P = 1280 * 720
_PIXELS_360P = 640 * 360


def _decode_cpu(pane_pixels: float) -> float:
    """CPU-s/s to receive and decode one input of about ``pane_pixels`` pixels (clamped to 360p..720p)."""
    pixels = min(max(pane_pixels, _PIXELS_360P), _PIXELS_720P)
    share = (pixels - _PIXELS_360P) / (_PIXELS_720P - _PIXELS_360P)
    return DECODE_CPU_360P + (DECODE_CPU_720P - DECODE_CPU_360P) * share


def task_cost(task: TaskSpec | TaskParams) -> float:
    """The estimated cost of running ``task``, in units (see the module docstring), rounded to 3 decimals.

    Args:
        task: a validated spec, or a task's parameters (validated here).

    Raises:
        SpecError: ``task`` is parameters that do not validate.
    """
    spec = task.to_spec() if isinstance(task, TaskParams) else task
    if not spec.has_video:
        return AUDIO_ONLY_COST
    inputs = 1 if spec.mix_mode is MixMode.RELAY else max(1, spec.task_profile.max_video_inputs)
    canvas = spec.width * spec.height
    encode = ENCODE_CPU_720P30 * canvas * spec.fps / (_PIXELS_720P * 30)
    cpu = encode + inputs * _decode_cpu(canvas / inputs)
    return round(cpu / UNIT_CPU, 3)


def params_cost(params: TaskParams) -> float:
    """:func:`task_cost` of stored parameters, 0.0 when they do not validate (such a task ends at
    once with "invalid parameters", so it must not wait for capacity)."""
    try:
        return task_cost(params)
    except (SpecError, ValueError):
        return 0.0


def cpu_cores() -> int:
    """CPU cores this process may run on (its affinity set, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_capacity() -> float:
    """A node's default capacity in units: :data:`UNITS_PER_CORE` per CPU core, rounded down to
    0.01 (3.42 on 2 cores: three unit mixes)."""
    return math.floor(cpu_cores() * UNITS_PER_CORE * 100) / 100


def requeue_delay() -> float:
    """Seconds to wait before a refused task is delivered again: :data:`REQUEUE_DELAY` +-50 %, so
    that tasks refused together do not come back together."""
    return REQUEUE_DELAY * random.uniform(0.5, 1.5)
