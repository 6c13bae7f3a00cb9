"""nginx with the RTMP module (Debian ``nginx`` + ``libnginx-mod-rtmp``) as a child process.

RTMP push/play on ``rtmp://{host}:{rtmp_port}/live/<stream>``, HLS at
``http://{host}:{http_port}/hls/<stream>.m3u8`` (2 s fragments), publisher/player counts at
``http://{host}:{http_port}/stat``.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from stack.ports import wait_for_port

#: Where Debian installs the RTMP module.
DEFAULT_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
TEMPLATE = Path(__file__).resolve().parent.parent / "deploy" / "nginx-rtmp.conf.template"
#: Seconds to wait for nginx to accept connections.
START_TIMEOUT = 10.0


class ServiceError(RuntimeError):
    """A local service is missing (package not installed) or did not start."""


@dataclass
class NginxRtmp:
    """One nginx-rtmp instance.

    Attributes:
        run_dir: folder for its config, pid, logs and HLS output (created).
        rtmp_port, http_port: TCP ports on ``host``.
        host: address to listen on (loopback by default).
    """

    run_dir: Path
    rtmp_port: int = 1935
    http_port: int = 8081
    host: str = "127.0.0.1"
    _process: subprocess.Popen[bytes] | None = None

    def rtmp_url(self, stream: str) -> str:
        """The push/play URL of ``stream`` in the ``live`` application."""
        return f"rtmp://{self.host}:{self.rtmp_port}/live/{stream}"

    def hls_url(self, stream: str) -> str:
        """The HLS playlist URL of ``stream``."""
        return f"http://{self.host}:{self.http_port}/hls/{stream}.m3u8"

    @property
    def hls_dir(self) -> Path:
        """Where nginx writes HLS playlists and segments."""
        return self.run_dir / "hls"

    def write_config(self) -> Path:
        """Render ``deploy/nginx-rtmp.conf.template`` into the run directory and return its path."""
        for sub in ("hls", "tmp"):
            (self.run_dir / sub).mkdir(parents=True, exist_ok=True)
        text = TEMPLATE.read_text(encoding="utf-8")
        for key, value in {
            "run_dir": str(self.run_dir),
            "module_path": str(DEFAULT_MODULE),
            "host": self.host,
            "rtmp_port": str(self.rtmp_port),
            "http_port": str(self.http_port),
        }.items():
            text = text.replace("{" + key + "}", value)
        path = self.run_dir / "nginx.conf"
        path.write_text(text, encoding="utf-8")
        return path

    def start(self) -> None:
        """Start nginx and wait until both ports answer.

        Raises:
            ServiceError: nginx or the RTMP module is not installed, or nginx did not come up
                (its error log is quoted).
        """
        binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
        if binary is None or not DEFAULT_MODULE.exists():
            raise ServiceError(
                "nginx with the RTMP module is not installed: apt-get install nginx libnginx-mod-rtmp "
                "(scripts/install-system-deps.sh does it)"
            )
        self.run_dir = self.run_dir.resolve()
        config = self.write_config()
        log = self.run_dir / "nginx-error.log"
        self._process = subprocess.Popen(
            [binary, "-p", str(self.run_dir), "-e", str(log), "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        ok = wait_for_port(self.host, self.rtmp_port, START_TIMEOUT) and wait_for_port(
            self.host, self.http_port, START_TIMEOUT
        )
        if not ok or self._process.poll() is not None:
            self.stop()
            detail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise ServiceError(f"nginx-rtmp did not start on {self.host}:{self.rtmp_port}: {detail}")

    def stop(self) -> None:
        """Stop nginx (SIGQUIT for a graceful stop, then SIGKILL after 5 s). Safe to call twice."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
