"""The dashboard's HTTP server (standard library): the page, /metrics, /healthz and the audit reports.

Routes: ``/`` and ``/?model=NAME`` and ``/models/NAME`` (the page), ``/metrics`` (Prometheus text
format), ``/healthz`` (200 as long as the process serves; it reads no service),
``/reports/<model>/<request>/<file>`` (an audit report from S3, since s3:// links are not clickable).
"""

from __future__ import annotations

import re
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from dashboard import page
from dashboard.metrics import ErasureCollector
from dashboard.registry import Registry, warm_up
from dashboard.s3 import Bucket, SourceDown
from dashboard.settings import Settings, load_settings, use_viewer_mlflow_account
from dashboard.snapshot import MODEL_NAME, Views

SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
REPORT = re.compile(rf"^/reports/({SEGMENT})/({SEGMENT})/({SEGMENT}\.(html|md|png|json))$")
REPORT_TYPES = {"html": "text/html; charset=utf-8", "md": "text/plain; charset=utf-8", "png": "image/png",
                "json": "application/json"}
# Nothing on a page (or in a proxied report) may load or run anything from elsewhere.
CSP = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; form-action 'none'"


class Dashboard:
    """What the request handler needs: settings, the shared views and the metrics registry."""

    def __init__(self, settings: Settings):
        self.settings = settings
        registry = Registry(settings.mlflow_uri, settings.alias, settings.registry_ttl_s)
        self.views = Views(settings, Bucket(settings), registry)
        self.metrics = CollectorRegistry(auto_describe=False)
        self.metrics.register(ErasureCollector(self.views))


class Handler(BaseHTTPRequestHandler):
    server_version = "lau-dashboard"
    app: Dashboard  # set on the subclass made per server

    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        url = urlsplit(self.path)
        path = unquote(url.path)
        try:
            if path == "/healthz":
                self._send(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8")
            elif path == "/metrics":
                self._send(HTTPStatus.OK, generate_latest(self.app.metrics), CONTENT_TYPE_LATEST)
            elif path in ("/", "/index.html") or path.startswith("/models/"):
                self._page(path, parse_qs(url.query).get("model", [None])[0])
            elif match := REPORT.match(path):
                self._report(*match.groups()[:3], match.group(4))
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as err:  # noqa: BLE001 - one bad view must not take the server down
            print(f"[dashboard] {self.path}: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, f"error: {type(err).__name__}\n".encode(),
                       "text/plain; charset=utf-8")

    def _page(self, path: str, query_model: str | None) -> None:
        model = path[len("/models/"):] if path.startswith("/models/") else query_model
        model = model or self.app.settings.default_model
        if not MODEL_NAME.match(model):
            self._send(HTTPStatus.BAD_REQUEST, b"bad model name\n", "text/plain; charset=utf-8")
            return
        views = self.app.views
        html = page.render(views.get(model), self.app.settings, views.models())
        self._send(HTTPStatus.OK, html.encode(), "text/html; charset=utf-8")

    def _report(self, model: str, request_id: str, name: str, ext: str) -> None:
        try:
            body = self.app.views.bucket.get(f"reports/{model}/{request_id}/{name}")
        except SourceDown as err:
            self._send(HTTPStatus.BAD_GATEWAY, f"{err}\n".encode(), "text/plain; charset=utf-8")
            return
        if body is None:
            self._send(HTTPStatus.NOT_FOUND, b"no such report\n", "text/plain; charset=utf-8")
        else:
            self._send(HTTPStatus.OK, body, REPORT_TYPES[ext])

    def do_HEAD(self) -> None:  # noqa: N802
        self._head_only = True
        self.do_GET()

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not getattr(self, "_head_only", False):
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the standard library's name
        pass  # one line per request would drown the stack's log; errors are printed above


def make_server(host: str, port: int, model: str | None = None,
                params_path: str | Path | None = None) -> ThreadingHTTPServer:
    """A bound, not yet serving, dashboard server (``serve_forever()`` it, ``shutdown()`` it)."""
    use_viewer_mlflow_account()
    app = Dashboard(load_settings(params_path, model))
    handler = type("BoundHandler", (Handler,), {"app": app})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=_warm, args=(app,), name="dashboard-warm-up", daemon=True).start()
    return server


def _warm(app: Dashboard) -> None:
    """Import MLflow and read the default model once, so the first page view is quick."""
    started = time.monotonic()
    warm_up()
    app.views.get(app.settings.default_model)
    print(f"[dashboard] ready in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)


def serve(host: str = "127.0.0.1", port: int = 8050, model: str | None = None,
          params_path: str | Path | None = None) -> None:
    """Serve the dashboard until interrupted (``lau dashboard`` and ``python -m dashboard`` call this).
    Raises OSError when the address cannot be bound (port in use)."""
    server = make_server(host, port, model, params_path)
    where = f"http://{host}:{server.server_address[1]}/"
    print(f"[dashboard] serving {where} (model {server.RequestHandlerClass.app.settings.default_model}); "
          f"{where}metrics for Prometheus", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
