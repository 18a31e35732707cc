"""``vllm serve MODEL ...`` stand-in: vLLM's flags (the ones the preset emits, plus common ones), its V1
startup lines in their real order and wording, ``/health`` 503 until the API server is up, and a prefill
answer with ``kv_transfer_params`` when asked for a remote decode (NixlConnector's proxy protocol)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

from ._engine import Engine, load_seconds, run_engine, strict_parser
from ._output import Log, progress

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = strict_parser("vllm")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", allow_abbrev=False)
    serve.add_argument("model")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--served-model-name", nargs="+")
    serve.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    serve.add_argument("--data-parallel-size", "-dp", type=int, default=1)
    serve.add_argument("--kv-transfer-config", type=json.loads)
    serve.add_argument("--max-model-len", type=int)
    serve.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    serve.add_argument("--enforce-eager", action="store_true")
    serve.add_argument("--trust-remote-code", action="store_true")
    serve.add_argument("--seed", type=int)
    return parser


def _line(source: str, message: str) -> None:
    sys.stdout.write(f"INFO {time.strftime('%m-%d %H:%M:%S')} [{source}] {message}\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    name = (args.served_model_name or [args.model])[0]
    engine = Engine(Log("vllm"), name)
    gpus = args.tensor_parallel_size * args.data_parallel_size
    visible, cuda = os.environ.get("HIP_VISIBLE_DEVICES"), os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and cuda is not None and cuda != visible:  # vLLM on ROCm copies HIP's value to CUDA's
        print(
            f"AssertionError: HIP_VISIBLE_DEVICES={visible!r} and CUDA_VISIBLE_DEVICES={cuda!r} differ", file=sys.stderr
        )
        return 1
    visible = cuda if visible is None else visible
    if visible is not None and len([g for g in visible.split(",") if g]) < gpus:
        print(f"ValueError: world size {gpus} is larger than the {visible!r} visible GPUs", file=sys.stderr)
        return 1

    def prefill_answer(body: dict[str, object]) -> dict[str, object]:
        params = body.get("kv_transfer_params")
        if not (isinstance(params, dict) and params.get("do_remote_decode")):
            return {}
        _line("nixl_connector.py:500", f"prefill done for a remote decode (model {name})")
        port = int(os.environ.get("VLLM_NIXL_SIDE_CHANNEL_PORT", "5600"))
        remote = {"do_remote_prefill": True, "do_remote_decode": False, "remote_block_ids": [0]}
        remote.update(remote_engine_id=f"standin-{os.getpid()}", remote_host="127.0.0.1", remote_port=port)
        return {"kv_transfer_params": remote}

    engine.extra = prefill_answer

    async def startup(port: int) -> None:
        budget = load_seconds()
        _line("api_server.py:1880", "vLLM API server version 0.11.0+standin")
        config = f"model={args.model!r}, tensor_parallel_size={args.tensor_parallel_size}"
        _line(
            "core.py:77", f"Initializing a V1 LLM engine (v0.11.0) with config: {config}, kv={args.kv_transfer_config}"
        )
        _line("gpu_model_runner.py:2338", f"Starting to load model {args.model}...")
        await asyncio.sleep(budget * 0.5)
        _line("default_loader.py:267", f"Loading weights took {budget * 0.5:.2f} seconds")
        _line("gpu_model_runner.py:2370", f"Model loading took 0.0100 GiB and {budget * 0.5:.6f} seconds")
        await asyncio.sleep(budget * 0.2)
        _line("gpu_worker.py:298", "Available KV cache memory: 1.50 GiB")
        _line("kv_cache_utils.py:1087", "GPU KV cache size: 49,152 tokens")
        if not args.enforce_eager:
            sys.stderr.write(progress("Capturing CUDA graphs (mixed prefill-decode, PIECEWISE)", 4, 4, 0.1) + "\n")
            await asyncio.sleep(budget * 0.2)
            _line("gpu_model_runner.py:3480", "Graph capturing finished in 0 secs, took 0.01 GiB")
        _line("core.py:210", f"init engine (profile, create kv cache, warmup model) took {budget:.2f} seconds")
        _line("api_server.py:1971", f"Starting vLLM API server 0 on http://{args.host}:{port}")
        engine.log.uvicorn(f"Started server process [{os.getpid()}]")
        engine.log.uvicorn("Waiting for application startup.")
        engine.mark_ready()
        engine.log.uvicorn("Application startup complete.")

    return asyncio.run(run_engine(engine, args.host or "0.0.0.0", args.port, startup))
