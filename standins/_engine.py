"""What the engine stand-ins (vLLM, SGLang, TensorRT-LLM) share: an OpenAI server and its run loop.

Each engine module parses the engine's real flags and prints its real startup lines; this module answers
``/health`` (503 while loading), ``/v1/models``, ``/v1/completions`` and ``/v1/chat/completions``
(streaming too), and exits 0 on SIGTERM/SIGINT with uvicorn's shutdown lines. ``STANDIN_LOAD_SECONDS``
(default 0.3) stretches the startup, since the engines' own flags must stay the real ones.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine

from ._http import HttpError, HttpServer, Request, Response, StreamResponse, json_response
from ._output import Log
from ._role import Role, models_response, require

__all__ = ["Engine", "load_seconds", "run_engine", "strict_parser"]

_WORD = re.compile(r"[A-Za-z0-9']+")


def load_seconds() -> float:
    return max(0.0, float(os.environ.get("STANDIN_LOAD_SECONDS", "0.3")))


def strict_parser(prog: str) -> argparse.ArgumentParser:
    """An argparse parser that refuses abbreviations, so a flag the engine lacks is an error (exit 2)."""
    return argparse.ArgumentParser(prog=prog, allow_abbrev=False)


class Engine(Role):
    """An OpenAI server for one model; ``extra`` adds engine-specific fields to completion answers."""

    name = "engine"

    def __init__(self, log: Log, model: str) -> None:
        super().__init__(argparse.Namespace(), log)
        self.model = model
        self.extra: Callable[[dict[str, object]], dict[str, object]] = lambda body: {}
        self.routes: dict[str, Callable[[Request], Awaitable[Response | StreamResponse]]] = {}
        #: what ``/health`` reports: ready by default; SGLang's is 200 before its warm-up
        self.health: Callable[[], bool] = self.ready.is_set

    def mark_ready(self) -> None:
        self.ready.set()

    def healthy(self) -> bool:
        return self.health()

    async def route(self, request: Request) -> Response | StreamResponse:
        if request.path in self.routes:
            return await self.routes[request.path](request)
        if request.path == "/v1/models":
            require(request, "GET")
            if not self.ready.is_set():  # the real servers answer nothing before their API server runs
                raise HttpError(503, "model is still loading")
            return models_response(self.model)
        if request.path in ("/v1/completions", "/v1/chat/completions"):
            require(request, "POST")
            return self.complete(request)
        raise HttpError(404, f"no route for {request.path}")

    def complete(self, request: Request) -> Response | StreamResponse:
        if not self.ready.is_set():
            raise HttpError(503, "model is still loading")
        body = request.json()
        if not isinstance(body, dict):
            raise HttpError(400, "request body must be a JSON object")
        if body.get("model") not in (None, self.model):
            raise HttpError(404, f"The model `{body.get('model')}` does not exist.")
        chat = request.path.endswith("chat/completions")
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens", 16))
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise HttpError(400, f"'max_tokens' must be a positive integer, got {max_tokens!r}")
        words = [w.lower() for w in _WORD.findall(_prompt(body, chat))] or ["hello"]
        tokens = [words[i % len(words)] for i in range(max_tokens)]
        self.requests_total += 1
        ident = f"{'chatcmpl' if chat else 'cmpl'}-standin-{os.getpid()}-{self.requests_total}"
        extra = self.extra(body)
        if body.get("stream") is True:
            return StreamResponse(self._stream(ident, chat, tokens))
        text = " ".join(tokens)
        choice: dict[str, object] = {"index": 0, "finish_reason": "length"}
        choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
        answer = {
            "id": ident,
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [choice],
            "usage": {"prompt_tokens": len(words), "completion_tokens": max_tokens,
                      "total_tokens": len(words) + max_tokens},
            **extra,
        }  # fmt: skip
        return json_response(200, answer)

    async def _stream(self, ident: str, chat: bool, tokens: list[str]) -> AsyncGenerator[bytes, None]:
        for index, token in enumerate(tokens):
            piece = token if index == 0 else " " + token
            delta = {"delta": {"content": piece}} if chat else {"text": piece}
            chunk = {"id": ident, "model": self.model, "choices": [{"index": 0, **delta, "finish_reason": None}]}
            yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
            await asyncio.sleep(0)
        yield b"data: [DONE]\n\n"


def _prompt(body: dict[str, object], chat: bool) -> str:
    if not chat:
        prompt = body.get("prompt")
        return " ".join(map(str, prompt)) if isinstance(prompt, list) else str(prompt or "")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise HttpError(400, "'messages' must be a non-empty list of message objects")
    last = messages[-1]
    return str(last.get("content", "")) if isinstance(last, dict) else ""


async def run_engine(
    engine: Engine,
    host: str,
    port: int,
    startup: Callable[[int], Coroutine[object, object, None]],
    also: tuple[tuple[str, int], ...] = (),
) -> int:
    """Serve until SIGTERM/SIGINT (exit 0); ``startup(port)`` prints the engine's lines and marks it ready.

    ``also``: more ports the engine binds (SGLang's bootstrap server); a taken one fails the start.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    servers = [HttpServer(engine.handle, engine.log, False)]
    servers += [HttpServer(_bootstrap, engine.log, False) for _ in also]
    try:
        bound = await servers[0].start(host, port)
        for server, (other_host, other_port) in zip(servers[1:], also, strict=True):
            await server.start(other_host, other_port)
    except OSError as exc:
        engine.log.error(f"[Errno 98] error while attempting to bind on address ({host!r}, {port}): {exc}")
        return 1
    engine.bound(host, bound)
    task = asyncio.create_task(startup(bound))
    await stop.wait()
    task.cancel()
    await asyncio.wait([task])
    engine.log.uvicorn("Shutting down")
    for server in servers:
        await server.close()
    engine.log.uvicorn("Waiting for application shutdown.")
    engine.log.uvicorn("Application shutdown complete.")
    engine.log.uvicorn(f"Finished server process [{os.getpid()}]")
    return 0


async def _bootstrap(request: Request) -> Response:
    return json_response(200, {"status": "ok", "path": request.path})
