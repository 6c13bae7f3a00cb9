"""nginx with the RTMP module (Debian ``nginx`` + ``libnginx-mod-rtmp``) as a child process.

RTMP push/play on ``rtmp://{host}:{rtmp_port}/live/<stream>``, HLS at
``http://{host}:{http_port}/hls/<stream>.m3u8`` (2 s fragments), publisher/player counts at
``http://{host}:{http_port}/stat``. The HLS outputs the workers write themselves (issue 13, kind
``hls``) are served from ``task_hls_dir`` at ``http://{host}:{http_port}/hls/<app_id>/<task_id>/index.m3u8``
(a directory of its own: nginx-rtmp deletes old files under its ``hls_path``, subfolders included).
"""

from __future__ import annotations

import signal
from pathlib import Path

from rtc_mpu.stack.process import DEPLOY_DIR, ManagedProcess, ServiceStartError, find_binary, render_template

#: Where Debian installs the RTMP module.
DEFAULT_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
TEMPLATE = DEPLOY_DIR / "nginx-rtmp.conf.template"

__all__ = ["NginxRtmp", "ServiceStartError"]


class NginxRtmp:
    """One nginx-rtmp instance.

    Args:
        run_dir: folder for its config, logs and HLS output (created).
        rtmp_port, http_port: TCP ports on ``host``.
        host: address to listen on (loopback by default).
        pid_file: if set, nginx is started detached and recorded there (see
            :class:`rtc_mpu.stack.process.ManagedProcess`).
        task_hls_dir: the workers' HLS directory (``MPU_HLS_DIR``) served at
            ``/hls/<app_id>/<task_id>/``; default ``<run_dir>/task-hls``.
    """

    def __init__(
        self,
        run_dir: Path,
        rtmp_port: int = 1935,
        http_port: int = 8081,
        host: str = "127.0.0.1",
        pid_file: Path | None = None,
        task_hls_dir: Path | None = None,
    ):
        self.run_dir = run_dir.resolve()
        self.task_hls_dir = (task_hls_dir or self.run_dir / "task-hls").absolute()
        self.rtmp_port = rtmp_port
        self.http_port = http_port
        self.host = host
        self._process = ManagedProcess("nginx-rtmp", self.run_dir / "nginx-error.log", pid_file)

    @property
    def pid(self) -> int | None:
        """Process id while running."""
        return self._process.pid

    def rtmp_url(self, stream: str) -> str:
        """The push/play URL of ``stream`` in the ``live`` application."""
        return f"rtmp://{self.host}:{self.rtmp_port}/live/{stream}"

    def hls_url(self, stream: str) -> str:
        """The HLS playlist URL of ``stream``."""
        return f"http://{self.host}:{self.http_port}/hls/{stream}.m3u8"

    def task_hls_url(self, app_id: str, task_id: str) -> str:
        """The playlist URL of a task's HLS output (written by its worker under ``task_hls_dir``)."""
        return f"http://{self.host}:{self.http_port}/hls/{app_id}/{task_id}/index.m3u8"

    @property
    def hls_dir(self) -> Path:
        """Where nginx writes HLS playlists and segments."""
        return self.run_dir / "hls"

    def start(self) -> None:
        """Start nginx and wait until both ports answer.

        Raises:
            ServiceStartError: nginx or the RTMP module is not installed, or nginx did not come up.
        """
        self._process.launch(self.prepare(), self.host, [self.rtmp_port, self.http_port])

    def prepare(self) -> list[str]:
        """Make the run directory, write ``<run_dir>/nginx.conf`` and return nginx's command line
        (foreground), without starting it (:meth:`start` launches it; a container's entrypoint
        runs it).

        Raises:
            ServiceStartError: nginx or the RTMP module is not installed.
        """
        binary = find_binary("nginx", "nginx")
        if not DEFAULT_MODULE.exists():
            raise ServiceStartError(
                "the nginx RTMP module is not installed: apt-get install libnginx-mod-rtmp"
            )
        for sub in ("hls", "tmp"):
            (self.run_dir / sub).mkdir(parents=True, exist_ok=True)
        self.task_hls_dir.mkdir(parents=True, exist_ok=True)
        values = {
            "run_dir": str(self.run_dir),
            "module_path": str(DEFAULT_MODULE),
            "host": self.host,
            "rtmp_port": str(self.rtmp_port),
            "http_port": str(self.http_port),
            "deploy_dir": str(DEPLOY_DIR),
            "task_hls_dir": str(self.task_hls_dir),
        }
        config = render_template(TEMPLATE, values, self.run_dir / "nginx.conf")
        return [binary, "-p", str(self.run_dir), "-e", str(self._process.log_path), "-c", str(config)]

    def stop(self) -> None:
        """Stop nginx gracefully (SIGQUIT). Safe to call twice."""
        self._process.stop(signal.SIGQUIT)
