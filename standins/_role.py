"""What every role shares: readiness, /health, /metrics and the route table."""

from __future__ import annotations

import argparse
import asyncio

from ._http import HttpError, Request, Response, StreamResponse, json_response
from ._output import Log


class Role:
    """What every role shares: readiness, health, metrics, and the route table."""

    name = "role"

    def __init__(self, args: argparse.Namespace, log: Log) -> None:
        self.args = args
        self.log = log
        self.ready = asyncio.Event()
        self.base_url = ""
        self.requests_total = 0
        self.metrics_enabled = True  #: /metrics answers (SGLang's only with --enable-metrics)

    def bound(self, host: str, port: int) -> None:
        advertised = "127.0.0.1" if host in ("", "0.0.0.0") else ("::1" if host == "::" else host)
        self.base_url = f"http://[{advertised}]:{port}" if ":" in advertised else f"http://{advertised}:{port}"

    def mark_ready(self) -> None:
        """Health turns 200 and the readiness line is printed in the same loop step."""
        self.ready.set()
        self.log.uvicorn("Application startup complete.")

    async def startup(self) -> None:
        raise NotImplementedError

    async def shutdown(self, graceful: bool) -> None:
        """Role-specific cleanup, bounded to a few milliseconds."""

    def healthy(self) -> bool:
        return self.ready.is_set()

    def health_payload(self) -> dict[str, object]:
        return {"status": "ok" if self.healthy() else "loading"}

    def metric_lines(self) -> list[str]:
        return []

    async def handle(self, request: Request) -> Response | StreamResponse:
        if request.path == "/health":
            require(request, "GET")
            return json_response(200 if self.healthy() else 503, self.health_payload())
        if request.path == "/metrics" and self.metrics_enabled:
            require(request, "GET")
            return Response(200, self._metrics().encode(), "text/plain; version=0.0.4; charset=utf-8")
        return await self.route(request)

    async def route(self, request: Request) -> Response | StreamResponse:
        raise HttpError(404, f"no route for {request.path}")

    def _metrics(self) -> str:
        labels = f'role="{self.name}"'
        lines = [
            "# HELP standin_requests_total Requests handled by this stand-in's API.",
            "# TYPE standin_requests_total counter",
            f"standin_requests_total{{{labels}}} {self.requests_total}",
            *self.metric_lines(),
            "# HELP standin_ready 1 once the stand-in is ready to serve.",
            "# TYPE standin_ready gauge",
            f"standin_ready{{{labels}}} {int(self.healthy())}",
        ]
        return "\n".join(lines) + "\n"


def require(request: Request, *methods: str) -> None:
    if request.method not in methods:
        raise HttpError(405, f"{request.method} not allowed on {request.path} (use {', '.join(methods)})")


def models_response(model: str) -> Response:
    return json_response(200, {"object": "list", "data": [{"id": model, "object": "model", "owned_by": "standin"}]})
