"""The local stack's services (nginx-rtmp so far) run as ordinary processes from Debian's packages.

Used by the tests (on free loopback ports) and by ``make demo``. Configs come from ``deploy/``.
"""
