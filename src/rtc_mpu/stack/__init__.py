"""The local stack's services (Redis, Janus, nginx-rtmp) run as ordinary processes from Debian's packages.

Used by the tests (on free loopback ports), by ``mpu stack`` (:mod:`rtc_mpu.stack.local_stack`) and by
``make demo``. Configs come from ``deploy/``.
"""
