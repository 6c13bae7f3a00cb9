"""The media pipeline, in the order media flows: ``sources/`` (channel subscription, files),
``video/`` (pane selection, geometry, compositor), ``overlays/``, ``audio/`` (mixer, voice
activity), ``output/`` (encoder, SEI, sinks, the push connection), with :mod:`~rtc_mpu.mixer.pipeline`
and :mod:`~rtc_mpu.mixer.clock` on top.

It imports neither Flask nor Celery: a mix runs from a :class:`rtc_mpu.spec.task.TaskSpec`, a
:class:`rtc_mpu.mixer.sources.base.Source` and a sink target alone (``docs/architecture.md``).
"""
