"""The local stack's token secret for the other ``mpu`` commands on the same machine.

``mpu stack up`` generates the channel-token secret into ``<MPU_RUN_DIR or run>/token-secret``
unless ``MPU_TOKEN_SECRET`` is set (:mod:`rtc_mpu.stack.local_stack`). So that ``mpu api``,
``mpu worker``, ``mpu edge`` and ``mpu mix`` started next to it work without copying the secret by
hand, each ``mpu`` command adopts that file's secret when ``MPU_TOKEN_SECRET`` is unset.
Standard library only (the API process loads it).
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from pathlib import Path

log = logging.getLogger(__name__)

#: The file ``mpu stack up`` writes the generated secret to, inside the run directory.
TOKEN_SECRET_FILE = "token-secret"


def adopt_stack_token_secret(environ: MutableMapping[str, str]) -> str | None:
    """Set ``MPU_TOKEN_SECRET`` in ``environ`` from ``<MPU_RUN_DIR or run>/token-secret`` when it is
    unset and the file exists. Returns the path read, or None (set already, or no file). The value
    is validated later by whoever uses it."""
    if environ.get("MPU_TOKEN_SECRET"):
        return None
    path = Path(environ.get("MPU_RUN_DIR", "").strip() or "run") / TOKEN_SECRET_FILE
    try:
        secret = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not secret:
        return None
    environ["MPU_TOKEN_SECRET"] = secret
    log.debug("using the local stack's token secret from %s", path)
    return str(path)


__all__ = ["TOKEN_SECRET_FILE", "adopt_stack_token_secret"]
