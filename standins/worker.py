"""The vLLM stand-in: a prefill or decode worker serving OpenAI chat completions.

``--max-num-seqs N`` (vLLM's flag) lets N requests generate at once; the rest wait in a queue whose depth is
the gauge ``vllm:num_requests_waiting`` (and ``standin_requests_waiting``) on ``/metrics``: a load that holds
requests open drives it, so an autoscaler can be shown without GPUs."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import time
from collections.abc import AsyncGenerator

from ._client import fetch
from ._http import HttpError, Request, Response, StreamResponse, UpstreamError, json_response
from ._output import Log, progress
from ._role import Role, models_response, require

_REGISTER_RETRY_S = 10.0
_REGISTER_REFRESH_S = 2.0
_DEREGISTER_TIMEOUT_S = 0.1
_FALLBACK_WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog")
_WORD = re.compile(r"[A-Za-z0-9']+")


class Worker(Role):
    """A vLLM worker: loads for a while (503), then serves OpenAI chat completions at a set pace."""

    name = "worker"

    def __init__(self, args: argparse.Namespace, log: Log) -> None:
        super().__init__(args, log)
        self.name = args.role_name
        self.model: str = args.model
        self.tokens_total = 0
        self.running = 0
        self.waiting = 0  #: requests queued for a slot (``--max-num-seqs``)
        limit = getattr(args, "max_num_seqs", 0) or 0
        self._slots = asyncio.Semaphore(limit) if limit > 0 else None
        self._key = ""
        self._registered = False
        self._refresher: asyncio.Task[None] | None = None

    def bound(self, host: str, port: int) -> None:
        super().bound(host, port)
        self._key = f"workers/{self.name}/{port}"

    async def startup(self) -> None:
        await self._load()
        self.mark_ready()
        if self.args.kv:
            await self._register()
            self._refresher = asyncio.create_task(self._keep_registered())

    async def _load(self) -> None:
        """Prints what vLLM prints while loading, spread over ``--load-seconds``."""
        loop = asyncio.get_running_loop()
        budget = max(0.0, self.args.load_seconds)
        start = loop.time()
        self.log.info(f"vLLM API server version 0.0.0+standin; model={self.model!r} role={self.name}")
        self.log.info(f"Starting to load model {self.model}...")
        shards = 5
        for done in range(shards + 1):
            if done:
                await asyncio.sleep(budget * 0.6 / shards)
            line = progress("Loading safetensors checkpoint shards", done, shards, loop.time() - start)
            self.log.raw(("\r" if done else "") + line)
        self.log.raw("\n")
        loaded = loop.time() - start
        self.log.info(f"Loading weights took {loaded:.2f} seconds")
        self.log.info(f"Model loading took 0.01 GiB and {loaded:.2f} seconds")
        await asyncio.sleep(budget * 0.2)
        self.log.info(f"Memory profiling takes {budget * 0.2:.2f} seconds")
        self.log.info("# cuda blocks: 4096, # CPU blocks: 512")
        self.log.info("Maximum concurrency for 2048 tokens per request: 32.00x")
        graphs, graph_start = 4, loop.time()
        for done in range(graphs + 1):
            if done:
                await asyncio.sleep(budget * 0.2 / graphs)
            line = progress("Capturing CUDA graph shapes", done, graphs, loop.time() - graph_start)
            self.log.raw(("\r" if done else "") + line)
        self.log.raw("\n")
        self.log.info(f"Graph capturing finished in {loop.time() - graph_start:.2f} secs")
        self.log.info(f"init engine (profile, create kv cache, warmup model) took {loop.time() - start:.2f} seconds")

    async def _register(self) -> None:
        url = f"{self.args.kv.rstrip('/')}/v1/kv/{self._key}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _REGISTER_RETRY_S
        problem = ""
        while loop.time() < deadline:
            try:
                status, _ = await fetch(url, "PUT", self.base_url.encode(), timeout=1.0)
                if status == 200:
                    self._registered = True
                    self.log.info(f"registered {self._key} = {self.base_url} with {self.args.kv}")
                    return
                problem = f"HTTP {status}"
            except UpstreamError as exc:
                problem = str(exc)
            await asyncio.sleep(0.1)
        self.log.warning(f"could not register with {self.args.kv} within {_REGISTER_RETRY_S:.0f}s: {problem}")

    async def _keep_registered(self) -> None:
        """Re-puts the key now and then, so a restarted (empty) kv learns about this worker again."""
        url = f"{self.args.kv.rstrip('/')}/v1/kv/{self._key}"
        healthy = self._registered
        while True:
            await asyncio.sleep(_REGISTER_REFRESH_S)
            try:
                status, _ = await fetch(url, "PUT", self.base_url.encode(), timeout=1.0)
                ok = status == 200
            except UpstreamError:
                ok = False
            if ok and not healthy:
                self.log.info(f"registration with {self.args.kv} restored")
            elif healthy and not ok:
                self.log.warning(f"registration with {self.args.kv} failing; will keep trying")
            healthy = ok
            self._registered = self._registered or ok

    async def shutdown(self, graceful: bool) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        if graceful and self._registered:
            url = f"{self.args.kv.rstrip('/')}/v1/kv/{self._key}"
            try:
                await fetch(url, "DELETE", timeout=_DEREGISTER_TIMEOUT_S)
                self.log.info(f"deregistered {self._key}")
            except UpstreamError as exc:
                self.log.warning(f"could not deregister {self._key}: {exc}")

    def metric_lines(self) -> list[str]:
        labels = f'role="{self.name}",model={json.dumps(self.model)}'
        return [
            "# HELP standin_tokens_generated_total Completion tokens generated.",
            "# TYPE standin_tokens_generated_total counter",
            f"standin_tokens_generated_total{{{labels}}} {self.tokens_total}",
            "# HELP standin_requests_running Requests being generated right now.",
            "# TYPE standin_requests_running gauge",
            f"standin_requests_running{{{labels}}} {self.running}",
            "# HELP standin_requests_waiting Requests queued for a slot (--max-num-seqs).",
            "# TYPE standin_requests_waiting gauge",
            f"standin_requests_waiting{{{labels}}} {self.waiting}",
            "# HELP vllm:num_requests_running Number of requests in model execution batches.",
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{{model_name={json.dumps(self.model)}}} {self.running}",
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
            "# TYPE vllm:num_requests_waiting gauge",
            f"vllm:num_requests_waiting{{model_name={json.dumps(self.model)}}} {self.waiting}",
        ]

    async def _slot(self) -> None:
        """Wait for one of ``--max-num-seqs`` slots (none to wait for without it); counted while waiting."""
        if self._slots is None:
            return
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1

    def _release(self) -> None:
        if self._slots is not None:
            self._slots.release()

    async def route(self, request: Request) -> Response | StreamResponse:
        if request.path == "/v1/models":
            require(request, "GET")
            return models_response(self.model)
        if request.path == "/v1/chat/completions":
            require(request, "POST")
            return await self._chat(request)
        raise HttpError(404, f"no route for {request.path}")

    async def _chat(self, request: Request) -> Response | StreamResponse:
        if not self.ready.is_set():
            raise HttpError(503, "model is still loading")
        chat = _ChatRequest.parse(request, self.model)
        self.requests_total += 1
        completion_id = f"chatcmpl-standin-{os.getpid()}-{self.requests_total}"
        if chat.stream:
            return StreamResponse(self._stream(chat, completion_id))
        await self._slot()
        self.running += 1
        try:
            text = "".join([token async for token in self._generate(chat)])
        finally:
            self.running -= 1
            self._release()
        return json_response(
            200,
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "length",
                    }
                ],
                "usage": chat.usage(),
            },
        )

    async def _stream(self, chat: _ChatRequest, completion_id: str) -> AsyncGenerator[bytes, None]:
        created = int(time.time())

        def event(choices: list[object], **extra: object) -> bytes:
            chunk = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.model,
                "choices": choices,
                **extra,
            }
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        def delta(content: dict[str, str], finish: str | None = None) -> bytes:
            return event([{"index": 0, "delta": content, "finish_reason": finish}])

        await self._slot()
        self.running += 1
        try:
            yield delta({"role": "assistant", "content": ""})
            async for token in self._generate(chat):
                yield delta({"content": token})
            yield delta({}, "length")
            if chat.include_usage:
                yield event([], usage=chat.usage())
            yield b"data: [DONE]\n\n"
        finally:
            self.running -= 1
            self._release()

    async def _generate(self, chat: _ChatRequest) -> AsyncGenerator[str, None]:
        """Deterministic tokens (the prompt's words, cycled), paced at ``--tokens-per-second``."""
        loop = asyncio.get_running_loop()
        rate = self.args.tokens_per_second
        start = loop.time()
        words = chat.words
        for index in range(chat.max_tokens):
            if rate > 0:
                delay = start + (index + 1) / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            self.tokens_total += 1
            word = words[index % len(words)]
            yield word if index == 0 else " " + word


class _ChatRequest:
    """The parts of an OpenAI chat request a stand-in uses, validated like vLLM would (400/404)."""

    __slots__ = ("include_usage", "max_tokens", "prompt_tokens", "stream", "words")

    def __init__(self, words: list[str], prompt_tokens: int, max_tokens: int, stream: bool, usage: bool) -> None:
        self.words = words
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.stream = stream
        self.include_usage = usage

    @classmethod
    def parse(cls, request: Request, served_model: str) -> _ChatRequest:
        body = request.json()
        if not isinstance(body, dict):
            raise HttpError(400, "request body must be a JSON object")
        model = body.get("model")
        if model is not None and model != served_model:
            raise HttpError(404, f"The model `{model}` does not exist.")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise HttpError(400, "'messages' must be a non-empty list of message objects")
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
        max_tokens = 16 if max_tokens is None else max_tokens
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise HttpError(400, f"'max_tokens' must be a positive integer, got {max_tokens!r}")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise HttpError(400, f"'stream' must be a boolean, got {stream!r}")
        options = body.get("stream_options")
        usage = isinstance(options, dict) and options.get("include_usage") is True
        texts = [_message_text(m) for m in messages]
        prompt_words = [w for text in texts for w in _WORD.findall(text)]
        last_user = next(
            (t for m, t in zip(reversed(messages), reversed(texts), strict=True) if m.get("role") == "user"),
            "",
        )
        words = [w.lower() for w in _WORD.findall(last_user)] or list(_FALLBACK_WORDS)
        return cls(words, len(prompt_words), max_tokens, stream, usage)

    def usage(self) -> dict[str, int]:
        total = self.prompt_tokens + self.max_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.max_tokens,
            "total_tokens": total,
        }


def _message_text(message: dict[str, object]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""
