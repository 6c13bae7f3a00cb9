"""What a mix task costs a worker node, in *units*, and how much a node can take.

**Unit**: 1.0 = one 1280x720 30 fps mix of up to 4 video inputs (TaskProfile ``4IN_720P``, MediaEncode
27), estimated at :data:`UNIT_CPU` = 0.62 CPU-seconds per second of output. A node's capacity
(``MPU_WORKER_CAPACITY``) defaults to 1.0 unit per CPU core, which leaves about 40 % of each core for
what the estimate does not see (inputs larger than assumed, start-up, overlays, the OS).

**Model** (CPU-seconds per output second, then divided by :data:`UNIT_CPU`)::

    cost = (ENCODE_CPU_720P30 * (width * height * fps) / (1280 * 720 * 30) + inputs * decode(pane)) / UNIT_CPU

- *Composite and encode*: proportional to the output's pixel rate; :data:`ENCODE_CPU_720P30` = 0.26
  CPU-s/s at 1280x720 30 fps. README "Benchmarks": one live 2-user 720p30 mix (two 640x360 inputs)
  measured 0.44 CPU-s/s in total; less two decoded 360p users (2 x 0.09) that leaves 0.26, in line
  with the ffmpeg CLI encoding the same canvas (0.23, docs/architecture.md).
- *Receive and decode one input* (RTP, SRTP, VP8, Opus; inputs arrive at 30 fps whatever the output's
  fps): measured 0.09 CPU-s/s at 640x360 (:data:`DECODE_CPU_360P`) and 0.18-0.21 at 1280x720
  (:data:`DECODE_CPU_720P` = 0.20; README "RTC channel", ``bench.channel_delay``). An input is assumed
  to be about the size of its pane (canvas pixels / inputs), clamped to 360p..720p (publishers send
  at least 360p; WebRTC cameras rarely send more than 720p), and its cost interpolated linearly in
  pixels between the two measurements.
- *inputs*: the TaskProfile's ``max_video_inputs`` (the capacity class the client asked for; when it
  gives none, the smallest profile that fits the encoding and the largest layout). Screen shares
  and users beyond the profile are not counted.
- *Relay* (MixMode 0) with video: one input over the whole canvas. *Audio only* (MediaEncode 0,
  TaskProfile ``Mixed_Audio``, or an audio relay): :data:`AUDIO_ONLY_COST` = 0.1 unit (Opus decoding
  and one AAC encoder; no measurement of its own).

Some costs (units): 4IN_720P at 1280x720 30 fps 1.0; 2IN_720P 0.83; 1IN_720P 0.74; 9IN_720P 1.73;
16IN_720P 2.74; 1IN_1080P at 1920x1080 30 fps 1.27; 16IN_1080P 3.27; 2IN_360P at 640x360 15 fps
(MediaEncode 1) 0.34; 1IN_360P 0.2; audio only 0.1.
"""

from __future__ import annotations

import os
import random

from rtc_mpu.layouts import SpecError
from rtc_mpu.spec.task import MixMode, TaskSpec
from rtc_mpu.workers.model import TaskParams

#: CPU-seconds per second to composite and encode 1280x720 at 30 fps (x264 veryfast, CBR) plus AAC.
ENCODE_CPU_720P30 = 0.26
#: CPU-seconds per second to receive and decode one 640x360 30 fps user (VP8 + Opus over WebRTC).
DECODE_CPU_360P = 0.09
#: CPU-seconds per second to receive and decode one 1280x720 30 fps user.
DECODE_CPU_720P = 0.20
#: CPU-seconds per second of one unit: a 1280x720 30 fps mix of 4 inputs of 640x360.
UNIT_CPU = ENCODE_CPU_720P30 + 4 * DECODE_CPU_360P
#: Cost of an audio-only task, in units.
AUDIO_ONLY_COST = 0.1
#: Units of capacity per CPU core by default.
UNITS_PER_CORE = 1.0
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
    """A node's default capacity in units: :data:`UNITS_PER_CORE` per CPU core."""
    return cpu_cores() * UNITS_PER_CORE


def requeue_delay() -> float:
    """Seconds to wait before a refused task is delivered again: :data:`REQUEUE_DELAY` +-50 %, so
    that tasks refused together do not come back together."""
    return REQUEUE_DELAY * random.uniform(0.5, 1.5)
