"""A mix task as plain data: the spec the API validates and the mixer runs.

Leaf package: it imports :mod:`rtc_mpu.layouts` and the standard library only, never a media
library (PyAV, aiortc, numpy, Pillow), Flask or Celery, so the API process can validate a task
without loading media code (``tests/test_import_rules.py`` holds this). Modules:
:mod:`~rtc_mpu.spec.task` (the task spec and its enums), :mod:`~rtc_mpu.spec.streams` (source types,
stream keys, the screen-share convention), :mod:`~rtc_mpu.spec.overlays` (images, texts and their
style, clocks, subscriptions), :mod:`~rtc_mpu.spec.colors` (the vendor's colour integers),
:mod:`~rtc_mpu.spec.urls` (StreamURL rules and lease keys), :mod:`~rtc_mpu.spec.text_rules`
(characters refused in ids, names and texts).
"""
