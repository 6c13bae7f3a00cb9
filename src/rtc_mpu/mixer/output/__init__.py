"""Where the mix goes: the H.264/AAC encoder (:mod:`~rtc_mpu.mixer.output.encoder`) with voice
activity as SEI (:mod:`~rtc_mpu.mixer.output.sei`), the sinks (RTMP push or file,
:mod:`~rtc_mpu.mixer.output.sinks`) and the push connection that reconnects on its own
(:mod:`~rtc_mpu.mixer.output.push`)."""
