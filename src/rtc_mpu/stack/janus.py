"""Janus (Debian ``janus``) with only the VideoRoom plugin and the HTTP transport, as a child process.

The HTTP API listens on ``http://{host}:{http_port}/janus``. Configs come from ``deploy/janus/``.
Rooms use string ids; rtc-mpu names a channel's room ``<AppId>:<ChannelId>``.

With a ``token_secret`` Janus runs in *signed-token* mode: every request must carry a token signed
with that secret and not expired (:mod:`rtc_mpu.spec.tokens` mints them), and only holders of the
VideoRoom ``admin_key`` derived from the secret create rooms.
"""

from __future__ import annotations

import re
from pathlib import Path

from rtc_mpu.spec.tokens import admin_key, check_secret
from rtc_mpu.stack.process import DEPLOY_DIR, ManagedProcess, find_binary, render_template

#: Where Debian installs Janus' plugins, transports, event handlers and loggers.
DEFAULT_LIB_DIR = Path("/usr/lib/x86_64-linux-gnu/janus")
CONFIG_FILES = ("janus.jcfg", "janus.transport.http.jcfg", "janus.plugin.videoroom.jcfg")


def _lib_dir() -> Path:
    candidates = [DEFAULT_LIB_DIR, *Path("/usr/lib").glob("*/janus")]
    for candidate in candidates:
        if (candidate / "plugins").exists():
            return candidate
    return DEFAULT_LIB_DIR


class Janus:
    """One Janus instance.

    Args:
        run_dir: folder for its configs and log (created).
        http_port: port of the HTTP API on ``host``.
        host: address the HTTP API binds to (loopback by default).
        api_secret: if set, every API request must carry it.
        rtp_port_range: UDP ports for media, ``"min-max"``.
        pid_file: if set, Janus is started detached and recorded there (see
            :class:`rtc_mpu.stack.process.ManagedProcess`).
        token_secret: if set, token authentication (signed tokens, ``MPU_TOKEN_SECRET``) is on
            and rooms are created only with the admin key derived from it.
        admin_port, admin_secret: if both are set, Janus' HTTP admin API listens on
            ``http://{host}:{admin_port}/admin`` and needs ``admin_secret`` (tests count sessions and
            handles with it); off by default.

    Raises:
        ValueError: ``token_secret`` is not a valid secret (:func:`rtc_mpu.spec.tokens.check_secret`),
            or ``admin_secret`` has characters other than ``A-Z a-z 0-9 _ -``.
    """

    def __init__(
        self,
        run_dir: Path,
        http_port: int = 8088,
        host: str = "127.0.0.1",
        api_secret: str | None = None,
        rtp_port_range: str = "20000-40000",
        pid_file: Path | None = None,
        token_secret: str | None = None,
        admin_port: int | None = None,
        admin_secret: str | None = None,
    ) -> None:
        self.run_dir = run_dir.resolve()
        self.http_port = http_port
        self.host = host
        self.api_secret = api_secret
        self.rtp_port_range = rtp_port_range
        self.token_secret = check_secret(token_secret) if token_secret is not None else None
        if admin_secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", admin_secret):
            raise ValueError("admin_secret must be 1-256 characters of A-Z, a-z, 0-9, '_' and '-'")
        self.admin_port = admin_port if admin_secret else None
        self.admin_secret = admin_secret if admin_port else None
        self._process = ManagedProcess("janus", self.run_dir / "janus.log", pid_file)

    @property
    def pid(self) -> int | None:
        """Process id while running."""
        return self._process.pid

    @property
    def url(self) -> str:
        """The HTTP API URL."""
        return f"http://{self.host}:{self.http_port}/janus"

    @property
    def admin_url(self) -> str | None:
        """The HTTP admin API URL, or None when it is off."""
        return f"http://{self.host}:{self.admin_port}/admin" if self.admin_port else None

    def start(self) -> None:
        """Write the configs and start Janus; wait until the HTTP API accepts connections.

        Raises:
            ServiceStartError: Janus is not installed or did not come up.
        """
        command = self.prepare()
        ports = [self.http_port, self.admin_port] if self.admin_port else [self.http_port]
        self._process.launch(command, self.host, ports)

    def prepare(self) -> list[str]:
        """Write the configs into ``<run_dir>/config`` and return Janus' command line, without starting
        it (:meth:`start` launches it; a container's entrypoint runs it, ``docker/``).

        Raises:
            ServiceStartError: Janus is not installed.
        """
        binary = find_binary("janus", "janus")
        config_dir = self.run_dir / "config"
        values = {
            "config_dir": str(config_dir),
            "lib_dir": str(_lib_dir()),
            "http_port": str(self.http_port),
            "host": self.host,
            "rtp_port_range": self.rtp_port_range,
            "api_secret_line": f'api_secret = "{self.api_secret}"' if self.api_secret else "",
            "token_auth_lines": (
                f'token_auth = true\n\ttoken_auth_secret = "{self.token_secret}"' if self.token_secret else ""
            ),
            "admin_key_line": f'admin_key = "{admin_key(self.token_secret)}"' if self.token_secret else "",
            "admin_http": "true" if self.admin_port else "false",
            "admin_port_lines": (
                f'admin_port = {self.admin_port}\n\tadmin_ip = "{self.host}"\n\tadmin_base_path = "/admin"'
                if self.admin_port
                else ""
            ),
            "admin_secret_line": f'admin_secret = "{self.admin_secret}"' if self.admin_secret else "",
        }
        for name in CONFIG_FILES:
            render_template(DEPLOY_DIR / "janus" / name, values, config_dir / name)
        log = self._process.log_path
        return [binary, "-F", str(config_dir), "-C", str(config_dir / "janus.jcfg"), "-N", "-L", str(log)]

    def stop(self) -> None:
        """Stop Janus. Safe to call twice."""
        self._process.stop()
