"""Stream ingest (issue 19): a media URL played into a channel as a participant.

``media.py`` opens the URL under the address and format rules; ``player.py`` paces it in real time
with the host's controls (play, pause, seek, volume) and its progress; ``publisher.py`` is its
publisher in the channel (a Janus VideoRoom remote publisher fed RTP, with a data channel for the
progress). The workers run it (:mod:`rtc_mpu.workers.ingest_runner`); the API takes the requests
(:mod:`rtc_mpu.api.ingests`).
"""
