"""The Dynamo frontend stand-in: discovers workers in the kv, runs remote prefill, round-robins decode."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncGenerator

from ._client import Upstream, fetch, open_upstream
from ._http import HttpError, Request, Response, StreamResponse, UpstreamError
from ._output import Log
from ._role import Role, models_response, require

_KV_POLL_S = 0.2


class Frontend(Role):
    """Dynamo's frontend: finds workers in the kv, runs remote prefill, round-robins decode."""

    name = "frontend"

    def __init__(self, args: argparse.Namespace, log: Log) -> None:
        super().__init__(args, log)
        self.model: str = args.model
        self.kv: str = args.kv.rstrip("/")
        self.workers: dict[str, list[str]] = {"prefill": [], "decode": []}
        self._next: dict[str, int] = {"prefill": 0, "decode": 0}
        self.prefill_total = 0
        self.upstream_errors = 0
        self._poller: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        await asyncio.sleep(max(0.0, self.args.load_seconds))
        self.log.info(f"discovering workers under {self.kv}/v1/kv?prefix=workers/")
        self._poller = asyncio.create_task(self._poll())

    async def shutdown(self, graceful: bool) -> None:
        if self._poller is not None:
            self._poller.cancel()

    def healthy(self) -> bool:
        enough_prefill = bool(self.workers["prefill"]) or not self.args.require_prefill
        return bool(self.workers["decode"]) and enough_prefill

    def health_payload(self) -> dict[str, object]:
        counts = {role: len(urls) for role, urls in self.workers.items()}
        return {"status": "ok" if self.healthy() else "waiting for workers", "workers": counts}

    def metric_lines(self) -> list[str]:
        lines = [
            "# HELP standin_prefill_requests_total Remote prefills done before decoding.",
            "# TYPE standin_prefill_requests_total counter",
            f'standin_prefill_requests_total{{role="frontend"}} {self.prefill_total}',
            "# HELP standin_upstream_errors_total Worker requests that failed and were retried elsewhere.",
            "# TYPE standin_upstream_errors_total counter",
            f'standin_upstream_errors_total{{role="frontend"}} {self.upstream_errors}',
            "# HELP standin_workers Workers currently registered in the kv.",
            "# TYPE standin_workers gauge",
        ]
        lines += [f'standin_workers{{role="{role}"}} {len(urls)}' for role, urls in self.workers.items()]
        return lines

    async def _poll(self) -> None:
        reachable = True
        while True:
            try:
                status, body = await fetch(f"{self.kv}/v1/kv?prefix=workers/", timeout=1.0)
                listing = json.loads(body) if status == 200 else None
                problem = f"HTTP {status}"
            except (UpstreamError, ValueError) as exc:
                listing, problem = None, str(exc)
            if isinstance(listing, dict):
                if not reachable:
                    self.log.info(f"kv {self.kv} reachable again")
                reachable = True
                self._update(listing)
            elif reachable:
                reachable = False
                self.log.warning(f"kv {self.kv} not answering ({problem}); keeping the known workers")
            await asyncio.sleep(_KV_POLL_S)

    def _update(self, listing: dict[str, object]) -> None:
        found: dict[str, list[str]] = {"prefill": [], "decode": []}
        for key, value in listing.items():
            parts = key.split("/")
            if len(parts) == 3 and parts[1] in found and isinstance(value, str):
                found[parts[1]].append(value.rstrip("/"))
        for role, urls in found.items():
            urls.sort()
            old = self.workers[role]
            for url in sorted(set(urls) - set(old)):
                self.log.info(f"discovered {role} worker {url}")
            for url in sorted(set(old) - set(urls)):
                self.log.info(f"lost {role} worker {url}")
        self.workers = found
        if self.healthy() and not self.ready.is_set():
            self.mark_ready()

    def _rotation(self, role: str) -> list[str]:
        """All known workers of ``role``, starting at the next one in round-robin order."""
        urls = self.workers[role]
        if not urls:
            return []
        start = self._next[role] % len(urls)
        self._next[role] = start + 1
        return urls[start:] + urls[:start]

    async def route(self, request: Request) -> Response | StreamResponse:
        if request.path == "/v1/models":
            require(request, "GET")
            return models_response(self.model)
        if request.path == "/v1/chat/completions":
            require(request, "POST")
            return await self._chat(request)
        raise HttpError(404, f"no route for {request.path}")

    async def _chat(self, request: Request) -> Response | StreamResponse:
        if not self.healthy():
            raise HttpError(503, "no workers available yet")
        body = request.json()
        if not isinstance(body, dict):
            raise HttpError(400, "request body must be a JSON object")
        self.requests_total += 1
        if self.workers["prefill"]:
            await self._prefill(body)
        stream = body.get("stream") is True
        for url in self._rotation("decode"):
            try:
                upstream = await open_upstream(f"{url}/v1/chat/completions", "POST", request.body, timeout=2.0)
            except UpstreamError as exc:
                self._upstream_failed("decode", url, str(exc))
                continue
            if upstream.status == 503:
                upstream.close()
                self._upstream_failed("decode", url, "HTTP 503")
                continue
            content_type = upstream.headers.get("content-type", "application/json")
            headers = [("x-standin-worker", url)]
            if stream and upstream.status == 200:
                return StreamResponse(self._relay(upstream), content_type, headers)
            try:
                data = await upstream.read(timeout=600.0)
            except UpstreamError as exc:
                self._upstream_failed("decode", url, str(exc))
                continue
            finally:
                upstream.close()
            return Response(upstream.status, data, content_type, headers)
        raise HttpError(502, "no decode worker could take the request")

    async def _prefill(self, body: dict[str, object]) -> None:
        """Disaggregated prefill, simulated: one token, non-streaming, on the next prefill worker."""
        payload = {k: v for k, v in body.items() if k not in ("stream_options", "max_completion_tokens")}
        payload.update(max_tokens=1, stream=False)
        data = json.dumps(payload).encode()
        for url in self._rotation("prefill"):
            try:
                status, _ = await fetch(f"{url}/v1/chat/completions", "POST", data, timeout=30.0)
            except UpstreamError as exc:
                self._upstream_failed("prefill", url, str(exc))
                continue
            if status == 200:
                self.prefill_total += 1
                return
            self._upstream_failed("prefill", url, f"HTTP {status}")
        self.log.warning("remote prefill failed on every prefill worker; decoding without it")

    def _upstream_failed(self, role: str, url: str, problem: str) -> None:
        self.upstream_errors += 1
        self.log.warning(f"{role} worker {url} failed ({problem}); trying the next one")

    async def _relay(self, upstream: Upstream) -> AsyncGenerator[bytes, None]:
        try:
            async for piece in upstream.pieces(timeout=60.0):
                yield piece
        finally:
            upstream.close()
