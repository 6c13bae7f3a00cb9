"""The edge: WHIP ingest (RFC 9725) into a channel, a long-lived asyncio process (``mpu edge``).

A WHIP client (OBS 30+, FFmpeg 8's ``whip`` muxer, a browser) ``POST``s an SDP offer with a publish
token; the edge checks the token (:mod:`rtc_mpu.spec.tokens`) and the offer (:mod:`.sdp`), joins the
channel's VideoRoom room as the token's user with the offer and answers with Janus' SDP. Each
publisher's Janus session needs keepalives and a teardown when the client goes away, which a WSGI
request thread cannot give: the edge holds them (:mod:`.publishers`) on one event loop. The API
forwards the WHIP routes to it, so clients use the API's address (:mod:`rtc_mpu.api.whip`).

Modules: :mod:`.app` (HTTP routes, status codes), :mod:`.publishers` (Janus sessions and their
lifetime), :mod:`.sdp` (offer, answer and trickle checks), :mod:`.settings` (``MPU_*`` variables).
May import :mod:`rtc_mpu.spec`, :mod:`rtc_mpu.mixer.sources.janus_http` and aiohttp; never Flask,
Celery, :mod:`rtc_mpu.api`, :mod:`rtc_mpu.workers` or :mod:`rtc_mpu.cli`.
"""
