"""Overlays drawn with the panes: sprites (YUV + alpha, :mod:`~rtc_mpu.mixer.overlays.sprite`) made
from images fetched safely (:mod:`~rtc_mpu.mixer.overlays.images`) and texts and clocks
(:mod:`~rtc_mpu.mixer.overlays.text`), placed per frame by :mod:`~rtc_mpu.mixer.overlays.render`."""
