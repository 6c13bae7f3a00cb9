"""Benchmarks of rtc-mpu, run as modules (``python -m bench.mix_cpu``); not an installed package."""
