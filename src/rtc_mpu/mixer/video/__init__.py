"""The picture: which user takes which pane (:mod:`~rtc_mpu.mixer.video.selection`), pane geometry
on the canvas (:mod:`~rtc_mpu.mixer.video.geometry`), the YUV420p compositor
(:mod:`~rtc_mpu.mixer.video.compositor`) and colour conversion (:mod:`~rtc_mpu.mixer.video.color`)."""
