"""The HTTP API: JSON REST under ``/v1`` and Alibaba Cloud RTC's signed MPU RPC dialect at ``/``,
both over one service layer (:mod:`rtc_mpu.api.service`). It loads no media code (no aiortc, PyAV,
numpy or Pillow) and no Celery until a task is queued; see ``docs/architecture.md``."""
