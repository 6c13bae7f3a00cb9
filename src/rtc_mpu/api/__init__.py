"""The HTTP API: JSON REST under /v1 (and, later, the vendor's RPC dialect at /). No aiortc, no PyAV."""
