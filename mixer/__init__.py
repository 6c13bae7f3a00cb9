"""The media pipeline: sources, layout selection, compositor, audio mixer, encoder, sinks, controller.

It imports neither Flask nor Celery: a mix runs from a :class:`mixer.spec.TaskSpec`, a
:class:`mixer.source.Source` and a sink target alone.
"""
