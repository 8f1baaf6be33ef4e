"""The dashboard's HTTP server: `/` (the page), `/static/*` (its script, style and uPlot), `/api/dashboard`
(JSON of `Sampler.view`), in daemon threads of the server process, on its own port.

No build step and nothing from a CDN: the page is plain HTML and JavaScript in `static/`, and the charting library
(uPlot 1.6.32, MIT, `static/uPlot.LICENSE`) ships inside the package.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from server.dashboard.series import Sampler

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
_FILES = {path.name: path for path in STATIC.iterdir() if path.suffix in _TYPES}


def _handler(sampler: Sampler) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path in ("/", "/index.html"):
                self._file(_FILES["index.html"])
            elif path.startswith("/static/") and path[len("/static/") :] in _FILES:
                self._file(_FILES[path[len("/static/") :]])
            elif path == "/api/dashboard":
                self._send(200, "application/json", json.dumps(sampler.view()).encode())
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found\n")

        def _file(self, path: Path) -> None:
            self._send(200, _TYPES[path.suffix], path.read_bytes())

        def _send(self, status: int, kind: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler


class Dashboard:
    """The sampler and the HTTP server, started together. Raises OSError if the port cannot be bound."""

    def __init__(self, sampler: Sampler, host: str, port: int) -> None:
        self.sampler = sampler
        self.httpd = ThreadingHTTPServer((host, port), _handler(sampler))
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])

    def start(self) -> Dashboard:
        self.sampler.start()
        threading.Thread(target=self.httpd.serve_forever, name="aisle-dashboard", daemon=True).start()
        log.info("dashboard on http://%s:%d/", self.httpd.server_address[0], self.port)
        return self

    def stop(self) -> None:
        self.sampler.stop()
        self.httpd.shutdown()
