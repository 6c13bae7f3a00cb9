"""The sound: per-user jitter buffers and the 48 kHz mix (:mod:`~rtc_mpu.mixer.audio.mixer`) and
voice activity (:mod:`~rtc_mpu.mixer.audio.vad`)."""
