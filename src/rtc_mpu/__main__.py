"""``python -m rtc_mpu``: the ``mpu`` command."""

from rtc_mpu.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
