"""``python -m vajra.entrypoints.openai.api_server ...`` stand-in (flags of vajra-nightly 0.1.dev2025060906).

It takes Vajra's flattened flags (an unknown one is refused, exit 2), checks the resource mapping's shape,
and emulates what matters to a supervisor: ``ray.init()`` with no address joins ``RAY_ADDRESS`` (unless it is
``local``) or the cluster recorded in ``$RAY_TMPDIR/ray/ray_current_cluster`` (this stand-in records its
own there when it looked one up, as ``ray start`` does), so a replica that would join another one's Ray
refuses to start; one Ray worker
child per mapped GPU, in the server's process group, that outlives the server unless the group is
signalled; the startup lines, Rich-wrapped at 80 columns unless ``COLUMNS`` says wider; the port opened
only once the model is loaded; no ``/health``, no ``/metrics``; ``Authorization: Bearer KEY`` on every
``/v1`` route when started with ``--api_key``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from ._engine import Engine, load_seconds, strict_parser
from ._http import HttpError, HttpServer, Request, Response, StreamResponse
from ._output import Log

__all__ = ["main"]

#: a Ray worker: prints its line through the driver's output, then waits to be killed
_WORKER = (
    "import sys, time\n"
    "print(f'(RayWorker pid={__import__(\"os\").getpid()}) Model initialized on worker {sys.argv[1]}.', flush=True)\n"
    "while True:\n"
    "    time.sleep(3600)\n"
)


def _parser() -> argparse.ArgumentParser:
    parser = strict_parser("vajra.entrypoints.openai.api_server")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log_level", default="debug")
    parser.add_argument("--api_key")
    parser.add_argument("--model_config_model", default="meta-llama/Meta-Llama-3-8B-Instruct")
    parser.add_argument("--model_config_max_model_len", type=int, default=-1)
    parser.add_argument("--model_config_dtype", default="float16")
    parser.add_argument("--parallel_config_tensor_parallel_size", type=int, default=1)
    parser.add_argument("--parallel_config_pipeline_parallel_size", type=int, default=1)
    parser.add_argument("--worker_config_gpu_memory_utilization", type=float, default=0.85)
    parser.add_argument("--inference_engine_config_global_resource_mapping", type=json.loads)
    parser.add_argument("--llm_replicaset_controller_config_num_replicas", type=int, default=1)
    return parser


def _rich(text: str) -> None:
    """A line as Rich prints it: wrapped at ``COLUMNS`` (80 when unset)."""
    width = int(os.environ.get("COLUMNS") or "80")
    for line in textwrap.wrap(text, width=width) or [""]:
        print(line, flush=True)


class _Vajra(Engine):
    """No /health, no /metrics; ``/v1`` behind the API key."""

    def __init__(self, log: Log, model: str, key: str | None) -> None:
        super().__init__(log, model)
        self.key = key

    async def handle(self, request: Request) -> Response | StreamResponse:
        wanted = None if self.key is None else f"Bearer {self.key}"
        if request.path.startswith("/v1/") and wanted is not None and request.headers.get("authorization") != wanted:
            raise HttpError(401, "Unauthorized")
        return await self.route(request)


def _mapping_gpus(mapping: object, replicas: int, world: int) -> list[int] | str:
    """The GPU ids of replica set entry 0, or what is wrong with the mapping."""
    if not isinstance(mapping, dict) or sorted(mapping) != [str(i) for i in range(replicas)]:
        return f"keys must be '0'..'{replicas - 1}', got {mapping!r}"
    entries = mapping["0"]
    if not isinstance(entries, list) or len(entries) != world:
        return f"replica 0 needs {world} (node, gpu) entries (pp x tp), got {entries!r}"
    ids: list[int] = []
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
            return f"an entry must be [node, gpu id], got {entry!r}"
        if entry[0] and not entry[0].startswith("node:"):
            return f"a node must be '' or 'node:IP', got {entry[0]!r}"
        if isinstance(entry[1], bool) or not isinstance(entry[1], int) or entry[1] < 0:
            return f"a GPU id must be a whole number, got {entry[1]!r}"
        ids.append(entry[1])
    if len(set(ids)) != len(ids):
        return f"GPU ids repeat: {ids}"
    return ids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ray_init(log: Log) -> Path | str | None:
    """What ``ray.init()`` with no address does, as far as isolation goes: ``RAY_ADDRESS=local`` starts a
    Ray of its own; another ``RAY_ADDRESS`` is joined; unset or empty, the cluster recorded in the temp
    dir is joined if it runs, else a new one starts and, as ``ray start`` would, is recorded there. The
    stand-in never joins: it says why it would (a string), or returns its record (None: none written)."""
    address = os.environ.get("RAY_ADDRESS")
    if address == "local":
        log.info("Started a local Ray instance (RAY_ADDRESS=local)")
        return None
    if address:
        return f"RAY_ADDRESS={address}: ray.init() would connect to that Ray instead of starting its own"
    root = Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / "ray"
    current = root / "ray_current_cluster"
    with contextlib.suppress(OSError, ValueError):
        owner = int(current.read_text().strip().rpartition(":")[2])
        if owner != os.getpid() and _alive(owner):
            return f"{current} names a running Ray (pid {owner}): ray.init() would join it"
    root.mkdir(parents=True, exist_ok=True)
    current.write_text(f"127.0.0.1:{os.getpid()}\n")
    log.info(f"Started a local Ray instance, recorded in {current}")
    return current


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)  # as Vajra's driver does before CUDA starts
    log = Log("vajra")
    world = args.parallel_config_tensor_parallel_size * args.parallel_config_pipeline_parallel_size
    mapping = args.inference_engine_config_global_resource_mapping
    gpus = list(range(world))[::-1] if mapping is None else _mapping_gpus(mapping, 1, world)
    if isinstance(gpus, str):
        print(f"ValueError: global_resource_mapping: {gpus}", file=sys.stderr, flush=True)
        return 1
    _rich(f"Starting server with configuration: model={args.model_config_model} host={args.host} port={args.port}")
    ray = _ray_init(log)
    if isinstance(ray, str):
        print(f"RuntimeError: stand-in refuses to share a Ray: {ray}", file=sys.stderr, flush=True)
        return 1
    try:
        return asyncio.run(_serve(args, log, gpus))
    finally:
        if ray is not None:
            with contextlib.suppress(OSError):
                ray.unlink()


async def _serve(args: argparse.Namespace, log: Log, gpus: list[int]) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    _rich("Resource Allocation")
    _rich("replica | " + " ".join(f"gpu {gpu}" for gpu in gpus))
    _rich("Initializing an LLM Controller [Replica 0]")
    workers = [
        subprocess.Popen(
            [sys.executable, "-u", "-c", _WORKER, str(rank)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
        )
        for rank in range(len(gpus))
    ]
    log.info(f"Ray workers: {' '.join(str(w.pid) for w in workers)} on GPUs {','.join(map(str, gpus))}")
    for worker in workers:  # Ray relays each worker's output to the driver's
        assert worker.stdout is not None
        line = await loop.run_in_executor(None, worker.stdout.readline)
        _rich(line.decode().rstrip())
    await asyncio.sleep(load_seconds())
    _rich(f"# GPU blocks: {1024 * len(gpus)}")
    engine = _Vajra(log, args.model_config_model, args.api_key)
    _rich("Created OpenAIServingChat and OpenAIServingCompletion")
    server = HttpServer(engine.handle, log, False)
    try:
        port = await server.start(args.host, args.port)
    except OSError as exc:
        log.error(f"[Errno 98] error while attempting to bind on address ({args.host!r}, {args.port}): {exc}")
        return 1
    engine.bound(args.host, port)
    engine.log.uvicorn(f"Started server process [{os.getpid()}]")
    engine.log.uvicorn("Waiting for application startup.")
    engine.mark_ready()
    engine.log.uvicorn("Application startup complete.")
    print(f"INFO:     Uvicorn running on http://{args.host}:{port} (Press CTRL+C to quit)", file=sys.stderr, flush=True)
    await stop.wait()
    engine.log.uvicorn("Shutting down")
    await server.close()
    engine.log.uvicorn("Finished server process")
    return 0  # the Ray workers are left to the process group's signal, as Ray's teardown is not assured
