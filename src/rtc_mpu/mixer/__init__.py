"""The media pipeline: sources, layout selection, compositor, audio mixer, encoder, sinks, controller.

It imports neither Flask nor Celery: a mix runs from a :class:`rtc_mpu.spec.task.TaskSpec`, a
:class:`rtc_mpu.mixer.sources.base.Source` and a sink target alone.
"""
