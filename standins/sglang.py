"""``python -m sglang.launch_server`` and ``python -m sglang_router.launch_router`` stand-ins.

The server prints SGLang's startup lines, binds its bootstrap port in prefill mode, and, like SGLang,
answers ``/health`` 200 as soon as its HTTP server runs, *before* the warm-up request; only after the
warm-up does ``/health_generate`` turn 200 and "The server is fired up and ready to roll!" appear. The
router waits for its workers, then sends each request to a prefill and a decode server at once with
``bootstrap_host``/``bootstrap_port``/``bootstrap_room``, and answers with the decode server's reply.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import time

from ._client import fetch
from ._engine import Engine, load_seconds, run_engine, strict_parser
from ._http import HttpError, Request, Response, StreamResponse, UpstreamError, json_response
from ._output import Log

__all__ = ["main", "router_main"]


def _server_parser() -> argparse.ArgumentParser:
    parser = strict_parser("python -m sglang.launch_server")
    parser.add_argument("--model-path", "--model", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=30000)
    parser.add_argument("--served-model-name")
    parser.add_argument("--tp-size", "--tp", type=int, default=1)
    parser.add_argument("--dp-size", "--dp", type=int, default=1)
    parser.add_argument("--dist-init-addr", "--nccl-init-addr")  # one server over several nodes
    parser.add_argument("--nnodes", type=int, default=1)
    parser.add_argument("--node-rank", type=int, default=0)
    parser.add_argument("--enable-dp-attention", action="store_true")
    parser.add_argument("--disaggregation-mode", choices=("null", "prefill", "decode"), default="null")
    parser.add_argument("--disaggregation-bootstrap-port", type=int, default=8998)
    parser.add_argument("--disaggregation-transfer-backend", choices=("mooncake", "nixl", "ascend", "fake"))
    parser.add_argument("--disaggregation-ib-device")
    parser.add_argument("--mem-fraction-static", type=float)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--base-gpu-id", type=int, default=0)
    parser.add_argument("--enable-metrics", action="store_true", help="serve /metrics (off by default, as in SGLang)")
    return parser


def _line(message: str, rank: str = " TP0") -> None:
    print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}{rank}] {message}", flush=True)


def main(argv: list[str]) -> int:
    args = _server_parser().parse_args(argv)
    # each node runs tp_size / nnodes ranks per dp group (dp attention: the dp groups share the tp ranks)
    world = args.tp_size if args.enable_dp_attention else args.tp_size * args.dp_size
    gpus = args.base_gpu_id + world // max(1, args.nnodes)
    visible = os.environ.get("HIP_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES"))  # ROCm: HIP's
    if visible is not None and len([g for g in visible.split(",") if g]) < gpus:
        print(f"RuntimeError: CUDA error: invalid device ordinal (rank needs GPU {gpus - 1}, visible: {visible!r})")
        return 1
    engine = Engine(Log("sglang"), args.served_model_name or args.model_path)
    engine.metrics_enabled = args.enable_metrics
    warmed = asyncio.Event()
    loaded = asyncio.Event()
    engine.health = loaded.is_set

    async def health_generate(request: Request) -> Response:
        if not warmed.is_set():
            raise HttpError(503, "server is not warmed up yet")
        return json_response(200, {"text": "ok"})

    async def generate(request: Request) -> Response:
        engine.log.uvicorn(f'127.0.0.1:{random.randint(30000, 60000)} - "POST /generate HTTP/1.1" 200 OK')
        return json_response(200, {"text": " ok", "meta_info": {}})

    engine.routes.update({"/health_generate": health_generate, "/generate": generate})
    prefill = args.disaggregation_mode == "prefill"
    if prefill:
        engine.extra = lambda body: {"meta_info": {"bootstrap_room": body.get("bootstrap_room")}}

    async def startup(port: int) -> None:
        budget = load_seconds()
        _line(f"server_args=ServerArgs(model_path={args.model_path!r}, tp_size={args.tp_size}, "
              f"disaggregation_mode={args.disaggregation_mode!r})", "")  # fmt: skip
        _line("Init torch distributed begin.")
        _line("Init torch distributed ends. elapsed=0.01 s, mem usage=0.00 GB")
        _line("Load weight begin. avail mem=79.00 GB")
        await asyncio.sleep(budget * 0.4)
        _line(f"Load weight end. elapsed={budget * 0.4:.2f} s, type=LlamaForCausalLM, dtype=torch.bfloat16, "
              "avail mem=78.99 GB, mem usage=0.01 GB.")  # fmt: skip
        _line("KV Cache is allocated. #tokens: 4096, K size: 0.01 GB, V size: 0.01 GB")
        _line("Memory pool end. avail mem=70.00 GB")
        _line("Capture cuda graph begin. This can take up to several minutes. avail mem=70.00 GB")
        await asyncio.sleep(budget * 0.3)
        _line(f"Capture cuda graph end. Time elapsed: {budget * 0.3:.2f} s. mem usage=0.01 GB. avail mem=69.99 GB.")
        _line("max_total_num_tokens=4096, chunked_prefill_size=8192, max_prefill_tokens=16384, "
              "max_running_requests=256, context_len=4096")  # fmt: skip
        if prefill:
            _line(f"Start bootstrap server on port {args.disaggregation_bootstrap_port}", "")
        engine.log.uvicorn(f"Started server process [{os.getpid()}]")
        engine.log.uvicorn("Waiting for application startup.")
        engine.log.uvicorn("Application startup complete.")
        engine.log.uvicorn(f"Uvicorn running on http://{args.host}:{port} (Press CTRL+C to quit)")
        loaded.set()
        await asyncio.sleep(budget * 0.3)  # the warm-up request: /health is 200 already, generation is not
        await generate(Request("POST", "/generate", {}, "HTTP/1.1", {}, b""))
        engine.mark_ready()
        warmed.set()
        _line("The server is fired up and ready to roll!", "")

    also = ((args.host, args.disaggregation_bootstrap_port),) if prefill else ()
    return asyncio.run(run_engine(engine, args.host, args.port, startup, also))


def _router_parser() -> argparse.ArgumentParser:
    parser = strict_parser("python -m sglang_router.launch_router")
    parser.add_argument("--pd-disaggregation", action="store_true")
    parser.add_argument("--prefill", nargs="+", action="append", default=[], metavar="URL [BOOTSTRAP_PORT]")
    parser.add_argument("--decode", nargs=1, action="append", default=[], metavar="URL")
    parser.add_argument("--worker-urls", nargs="+", default=[])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=30000)
    parser.add_argument("--policy", default="cache_aware")
    parser.add_argument("--prefill-policy")
    parser.add_argument("--decode-policy")
    parser.add_argument("--worker-startup-timeout-secs", type=int, default=600)
    # like sgl-router, the Prometheus exporter always binds, 29000 unless told; a taken port ends the router
    parser.add_argument("--prometheus-port", type=int, default=29000)
    parser.add_argument("--prometheus-host", default="127.0.0.1")
    return parser


def router_main(argv: list[str]) -> int:
    args = _router_parser().parse_args(argv)
    if args.pd_disaggregation and not (args.prefill and args.decode):
        print("error: --pd-disaggregation needs at least one --prefill and one --decode", flush=True)
        return 2
    prefill = [(item[0].rstrip("/"), int(item[1]) if len(item) > 1 else None) for item in args.prefill]
    decode = [item[0].rstrip("/") for item in args.decode]
    engine = Engine(Log("sglang_router"), "")
    next_prefill, next_decode = itertools.cycle(prefill), itertools.cycle(decode)

    async def readiness(request: Request) -> Response:
        ready = engine.ready.is_set()
        return json_response(200 if ready else 503, {"status": "ready" if ready else "waiting"})

    async def models(request: Request) -> Response:
        status, body = await fetch(decode[0] + "/v1/models")
        return Response(status, body)

    async def completion(request: Request) -> Response | StreamResponse:
        if not engine.ready.is_set():
            raise HttpError(503, "no healthy workers")
        body = request.json()
        if not isinstance(body, dict):
            raise HttpError(400, "request body must be a JSON object")
        url, bootstrap = next(next_prefill)
        body.update(bootstrap_host="127.0.0.1", bootstrap_port=bootstrap, bootstrap_room=random.getrandbits(63))
        data = json.dumps(body).encode()
        try:
            _, (status, answer) = await asyncio.gather(
                fetch(url + request.path, "POST", data, timeout=600.0),
                fetch(next(next_decode) + request.path, "POST", data, timeout=600.0),
            )
        except UpstreamError as exc:
            raise HttpError(502, f"worker failed: {exc}") from None
        return Response(status, answer, "text/event-stream" if body.get("stream") else "application/json")

    engine.routes.update({"/readiness": readiness, "/liveness": readiness, "/v1/models": models,
                          "/v1/completions": completion, "/v1/chat/completions": completion})  # fmt: skip
    engine.health = lambda: True

    async def startup(port: int) -> None:
        engine.log.info(f"Starting router on {args.host}:{port} | mode: PrefillDecode")
        engine.log.info(f"prefill workers: {prefill}; decode workers: {decode}")
        deadline = time.monotonic() + args.worker_startup_timeout_secs
        for url in [u for u, _ in prefill] + decode:
            while time.monotonic() < deadline:
                try:
                    if (await fetch(url + "/health", timeout=1.0))[0] == 200:
                        break
                except UpstreamError:
                    pass
                await asyncio.sleep(0.05)
        engine.log.info(f"All {len(prefill) + len(decode)} workers are healthy")
        engine.mark_ready()

    exporter = ((args.prometheus_host, args.prometheus_port),)
    return asyncio.run(run_engine(engine, args.host, args.port, startup, exporter))
