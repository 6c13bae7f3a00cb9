"""rtc-mpu: a self-hosted RTC-to-RTMP mixer (MPU) with Alibaba Cloud RTC's MPU API.

The map of the package is ``docs/architecture.md``: :mod:`rtc_mpu.spec` (the task as plain data),
:mod:`rtc_mpu.layouts` (layout and encoding tables), :mod:`rtc_mpu.mixer` (the media pipeline),
:mod:`rtc_mpu.workers` (Celery and the task store), :mod:`rtc_mpu.api` (REST and the vendor's RPC),
:mod:`rtc_mpu.cli` (the ``mpu`` command) and :mod:`rtc_mpu.stack` (local services).
"""
