"""``python -m topologies.pd_proxy``: the prefill/decode proxy in front of disaggregated vLLM servers.

vLLM ships no proxy in its wheel, only ``tests/v1/kv_connector/nixl_integration/toy_proxy_server.py``
(FastAPI, not installed). This program speaks the same protocol, so it works with the real servers: each
request goes first to the next prefill server with ``max_tokens=1``, ``stream=false`` and
``kv_transfer_params={"do_remote_decode": true, ...}``; the ``kv_transfer_params`` of its answer are added
to the original request, which the next decode server answers (streamed back as it comes). Round robin on
both sides. Standard library plus httpx (a dependency of the supervisor), one request per connection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import signal
import sys
import uuid
from collections.abc import Iterator

import httpx

__all__ = ["BACKLOG", "main"]

_REMOTE_DECODE = {
    "do_remote_decode": True,
    "do_remote_prefill": False,
    "remote_engine_id": None,
    "remote_block_ids": None,
    "remote_host": None,
    "remote_port": None,
}
_API = ("/v1/completions", "/v1/chat/completions")
BACKLOG = 2048  #: listen backlog, as uvicorn's default


class Proxy:
    def __init__(self, prefill: list[str], decode: list[str]) -> None:
        self.prefill = [url.rstrip("/") for url in prefill]
        self.decode = [url.rstrip("/") for url in decode]
        self._next_prefill: Iterator[str] = itertools.cycle(self.prefill)
        self._next_decode: Iterator[str] = itertools.cycle(self.decode)
        # no pool limit, as vLLM's toy proxy: a decode stream holds its connection for the whole answer, and
        # httpx's default of 100 would queue the rest of a benchmark's requests inside the proxy
        unlimited = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=10.0), limits=unlimited)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            method, path, _ = head[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
            body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
            await self._route(method, path.split("?", 1)[0], body, writer, headers)
        except httpx.HTTPError as exc:
            with contextlib.suppress(ConnectionError):
                await _send(writer, 502, json.dumps({"error": f"upstream failed: {exc!r}"}).encode())
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, ConnectionError):
            pass
        finally:
            with contextlib.suppress(ConnectionError):
                writer.close()

    async def _route(
        self, method: str, path: str, body: bytes, writer: asyncio.StreamWriter, headers: dict[str, str]
    ) -> None:
        if method == "GET" and path == "/health":
            state = {"status": "ok", "prefill": len(self.prefill), "decode": len(self.decode)}
            await _send(writer, 200, json.dumps(state).encode())
        elif method == "GET" and path == "/v1/models":
            answer = await self.client.get(next(self._next_decode) + path, headers=_auth(headers))
            await _send(writer, answer.status_code, answer.content)
        elif method == "POST" and path in _API:
            await self._completion(path, body, writer, _auth(headers))
        else:
            await _send(writer, 404, json.dumps({"error": f"no route {method} {path}"}).encode())

    async def _completion(self, path: str, body: bytes, writer: asyncio.StreamWriter, auth: dict[str, str]) -> None:
        try:
            request = json.loads(body)
            if not isinstance(request, dict):
                raise ValueError("the body must be a JSON object")
        except ValueError as exc:
            await _send(writer, 400, json.dumps({"error": f"bad request body: {exc}"}).encode())
            return
        headers = {"X-Request-Id": str(uuid.uuid4()), **auth}
        first = dict(request, kv_transfer_params=_REMOTE_DECODE, stream=False, max_tokens=1)
        for unsupported in ("stream_options", "min_tokens", "min_completion_tokens"):  # as vLLM's toy proxy
            first.pop(unsupported, None)
        if "max_completion_tokens" in first:
            first["max_completion_tokens"] = 1
        try:
            prefilled = await self.client.post(next(self._next_prefill) + path, json=first, headers=headers)
        except httpx.HTTPError as exc:
            await _send(writer, 502, json.dumps({"error": f"prefill server failed: {exc!r}"}).encode())
            return
        if prefilled.status_code != 200:
            await _send(writer, prefilled.status_code, prefilled.content)
            return
        params = prefilled.json().get("kv_transfer_params")
        if params:
            request["kv_transfer_params"] = params
        try:
            async with self.client.stream("POST", next(self._next_decode) + path, json=request, headers=headers) as r:
                kind = r.headers.get("content-type", "application/json")
                writer.write(_head(r.status_code, [("content-type", kind), ("transfer-encoding", "chunked")]))
                async for piece in r.aiter_raw():
                    writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except httpx.HTTPError as exc:
            print(f"pd_proxy: decode request failed: {exc!r}", file=sys.stderr, flush=True)


def _auth(headers: dict[str, str]) -> dict[str, str]:
    """The client's credentials, passed on: servers started with ``--api-key`` answer 401 without them."""
    return {"Authorization": headers["authorization"]} if "authorization" in headers else {}


def _head(status: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} -", *(f"{name}: {value}" for name, value in headers), "connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _send(writer: asyncio.StreamWriter, status: int, body: bytes) -> None:
    writer.write(_head(status, [("content-type", "application/json"), ("content-length", str(len(body)))]) + body)
    await writer.drain()


async def _run(args: argparse.Namespace) -> int:
    proxy = Proxy(args.prefill, args.decode)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # uvicorn's backlog (the toy proxy runs on uvicorn): asyncio's 100 drops the SYNs of a larger burst of
    # clients, which retry a second later and see that second as time to first token
    server = await asyncio.start_server(proxy.serve, args.host, args.port, backlog=BACKLOG)
    print(f"pd_proxy: serving on http://{args.host}:{args.port}; prefill {proxy.prefill}, decode {proxy.decode}")
    sys.stdout.flush()
    await stop.wait()
    server.close()
    await proxy.client.aclose()
    print("pd_proxy: stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m topologies.pd_proxy", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--prefill", action="append", required=True, metavar="URL", help="a prefill server")
    parser.add_argument("--decode", action="append", required=True, metavar="URL", help="a decode server")
    return asyncio.run(_run(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
