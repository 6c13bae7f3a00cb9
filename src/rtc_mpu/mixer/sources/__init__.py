"""Where the mixer's media comes from: the :class:`~rtc_mpu.mixer.sources.base.Source` interface,
a Janus VideoRoom channel over WebRTC (:mod:`~rtc_mpu.mixer.sources.janus`, with its HTTP API
client :mod:`~rtc_mpu.mixer.sources.janus_http`) and local files (:mod:`~rtc_mpu.mixer.sources.files`)."""
