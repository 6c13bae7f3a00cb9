"""A webhook receiver for the integration tests, run as its own process:
``python -m tests.webhook_receiver PORT FILE``. Appends one JSON line per POST to FILE (arrival time,
path, signature header, body) and answers 200."""

from __future__ import annotations

import http.server
import json
import sys
import time
from typing import Any


def main(port: int, path: str) -> None:
    out = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the process

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            line = {
                "arrived": time.time(),
                "path": self.path,
                "signature": self.headers.get("X-MPU-Signature", ""),
                "body": body.decode(),
            }
            out.write(json.dumps(line) + "\n")
            out.flush()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
