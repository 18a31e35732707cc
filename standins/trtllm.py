"""``trtllm-serve MODEL ...`` and ``trtllm-serve disaggregated -c CONFIG`` stand-ins.

The server takes trtllm-serve's snake_case flags, refuses a missing ``--extra_llm_api_options`` file (as the
real one does on open), prints the PyTorch backend's startup lines, answers ``/health`` 503 until uvicorn
runs, and answers ``request_type: context_only`` requests with ``disaggregated_params``. The
disaggregated server reads its config (JSON, a subset of YAML), waits for every context and generation
server's ``/health``, then sends each request to a context server and then to a generation server.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import time

from ._client import fetch
from ._engine import Engine, load_seconds, run_engine, strict_parser
from ._http import HttpError, Request, Response, UpstreamError
from ._output import Log, progress

__all__ = ["main"]


def _serve_parser() -> argparse.ArgumentParser:
    parser = strict_parser("trtllm-serve")
    parser.add_argument("model")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--backend", choices=("pytorch", "tensorrt", "trt", "_autodeploy"), default="pytorch")
    parser.add_argument("--tensor_parallel_size", "--tp_size", type=int, default=1)
    parser.add_argument("--pipeline_parallel_size", "--pp_size", type=int, default=1)
    parser.add_argument("--context_parallel_size", "--cp_size", type=int, default=1)
    parser.add_argument("--moe_expert_parallel_size", "--ep_size", type=int)
    parser.add_argument("--max_batch_size", type=int)
    parser.add_argument("--max_num_tokens", type=int)
    parser.add_argument("--max_seq_len", type=int)
    parser.add_argument("--free_gpu_memory_fraction", "--kv_cache_free_gpu_memory_fraction", type=float)
    parser.add_argument("--trust_remote_code", action="store_true")
    parser.add_argument("--config", "--extra_llm_api_options", dest="extra_llm_api_options")
    parser.add_argument("--log_level", default="info")
    parser.add_argument("--server_role")
    return parser


def _line(message: str, level: str = "I") -> None:
    print(f"[{time.strftime('%m/%d/%Y-%H:%M:%S')}] [TRT-LLM] [{level}] {message}", flush=True)


def main(argv: list[str]) -> int:
    if argv[:1] == ["disaggregated"]:
        return _disaggregated(argv[1:])
    args = _serve_parser().parse_args(argv)
    options: object = {}
    if args.extra_llm_api_options is not None:
        try:
            with open(args.extra_llm_api_options) as file:
                text = file.read()
        except OSError as exc:
            print(f"FileNotFoundError: {exc}", flush=True)
            return 1
        try:
            options = json.loads(text)
        except ValueError:
            options = {"unparsed": text}
    if _world_size(args, options) > _visible_gpus(_world_size(args, options)):
        print(f"RuntimeError: world size {_world_size(args, options)} is larger than the visible GPUs", flush=True)
        return 1
    engine = Engine(Log("trtllm"), args.model)

    def context_answer(body: dict[str, object]) -> dict[str, object]:
        params = body.get("disaggregated_params")
        if not (isinstance(params, dict) and params.get("request_type") == "context_only"):
            return {}
        params = {"request_type": "context_only", "first_gen_tokens": [1], "ctx_request_id": engine.requests_total}
        return {"disaggregated_params": params}

    engine.extra = context_answer

    async def startup(port: int) -> None:
        budget = load_seconds()
        print("[TensorRT-LLM] TensorRT LLM version: 1.3.0rc15+standin", flush=True)
        _line("Using LLM with PyTorch backend")
        _line(f"extra LLM API options: {json.dumps(options)}")
        _line("Use 0.01 GB for model weights.")
        await asyncio.sleep(budget * 0.5)
        print(progress("Loading weights concurrently", 10, 10, budget * 0.5), flush=True)
        _line("Memory used at after loading weights (inside torch) in memory usage profiling: 0.01 GiB")
        cache = "Allocated 0.01 GiB for max tokens in paged KV cache (4096)."
        print(f"[TRT-LLM] [I] [batchmgr] [RANK 0] [MemUsageChange] {cache}", flush=True)
        _line("Run warmup with 1 tokens, include 0 generation tokens")
        await asyncio.sleep(budget * 0.3)
        _line("Creating CUDA graph instances for 4 batch sizes.")
        await asyncio.sleep(budget * 0.2)
        _serving(engine, args.host, port)

    return asyncio.run(run_engine(engine, args.host, args.port, startup))


def _world_size(args: argparse.Namespace, options: object) -> int:
    """One rank per GPU: tp x pp x cp, the ``--extra_llm_api_options`` file's sizes overriding the flags."""
    given = options if isinstance(options, dict) else {}
    sizes = [
        int(given.get(key, getattr(args, key)))
        for key in ("tensor_parallel_size", "pipeline_parallel_size", "context_parallel_size")
    ]
    return sizes[0] * sizes[1] * sizes[2]


def _visible_gpus(default: int) -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return default if visible is None else len([gpu for gpu in visible.split(",") if gpu])


def _serving(engine: Engine, host: str, port: int) -> None:
    engine.log.uvicorn(f"Started server process [{os.getpid()}]")
    engine.log.uvicorn("Waiting for application startup.")
    engine.mark_ready()
    engine.log.uvicorn("Application startup complete.")
    engine.log.uvicorn(f"Uvicorn running on http://{host}:{port} (Press CTRL+C to quit)")


def _disaggregated(argv: list[str]) -> int:
    parser = strict_parser("trtllm-serve disaggregated")
    parser.add_argument("-c", "--config_file", required=True)
    parser.add_argument("-t", "--server_start_timeout", type=int, default=180)
    parser.add_argument("-r", "--request_timeout", type=int, default=180)
    parser.add_argument("-l", "--log_level", default="info")
    args = parser.parse_args(argv)
    try:
        with open(args.config_file) as file:
            config = json.load(file)
        host, port = config["hostname"], int(config["port"])
        context = ["http://" + url for url in config["context_servers"]["urls"]]
        generation = ["http://" + url for url in config["generation_servers"]["urls"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: cannot read disaggregated config {args.config_file}: {exc!r}", flush=True)
        return 1
    engine = Engine(Log("trtllm.disagg"), "")
    next_context, next_generation = itertools.cycle(context), itertools.cycle(generation)

    async def completion(request: Request) -> Response:
        if not engine.ready.is_set():
            raise HttpError(503, "servers are not ready")
        body = request.json()
        if not isinstance(body, dict):
            raise HttpError(400, "request body must be a JSON object")
        first = dict(body, max_tokens=1, stream=False, disaggregated_params={"request_type": "context_only"})
        try:
            status, answer = await fetch(next(next_context) + request.path, "POST", json.dumps(first).encode(), 600.0)
            if status != 200:
                return Response(status, answer)
            params = dict(json.loads(answer)["disaggregated_params"], request_type="generation_only")
            data = json.dumps(dict(body, disaggregated_params=params)).encode()
            status, answer = await fetch(next(next_generation) + request.path, "POST", data, 600.0)
        except (UpstreamError, ValueError, KeyError) as exc:
            raise HttpError(502, f"disaggregated request failed: {exc!r}") from None
        return Response(status, answer, "text/event-stream" if body.get("stream") else "application/json")

    async def models(request: Request) -> Response:
        return Response(*await fetch(generation[0] + "/v1/models"))

    engine.routes.update({"/v1/completions": completion, "/v1/chat/completions": completion, "/v1/models": models})

    async def startup(bound: int) -> None:
        deadline = time.monotonic() + args.server_start_timeout
        for url in context + generation:
            while True:
                try:
                    if (await fetch(url + "/health", timeout=1.0))[0] == 200:
                        break
                except UpstreamError:
                    pass
                if time.monotonic() > deadline:
                    _line(f"server {url} not ready within {args.server_start_timeout}s", "E")
                    break
                await asyncio.sleep(0.05)
        _line(f"Server {len(context)} context and {len(generation)} generation servers are ready")
        _serving(engine, host, bound)

    return asyncio.run(run_engine(engine, host, port, startup))
