"""``python -m standins ROLE``: runs one stand-in until SIGTERM/SIGINT or a simulated crash."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
import sys
from collections.abc import Callable

from ._http import HttpServer
from ._output import Log
from ._role import Role
from .frontend import Frontend
from .kv import KvStore
from .worker import Worker

__all__ = ["main"]

DEFAULT_MODEL = "standin/tiny-llm"


async def _run(args: argparse.Namespace) -> int:
    log = Log(args.role)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reason: list[str] = []
    crash_code: list[int] = []

    def on_signal(sig: signal.Signals) -> None:
        if not reason:
            reason.append(sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    role: Role = {"kv": KvStore, "worker": Worker, "frontend": Frontend}[args.role](args, log)
    server = HttpServer(role.handle, log, args.access_log)
    try:
        port = await server.start(args.host, args.port)
    except OSError as exc:
        log.error(f"error while attempting to bind on address ({args.host!r}, {args.port}): {exc}")
        return 1
    role.bound(args.host, port)
    pid = os.getpid()
    log.uvicorn(f"Started server process [{pid}]")
    log.uvicorn("Waiting for application startup.")
    log.uvicorn(f"Uvicorn running on http://{args.host}:{port} (Press CTRL+C to quit)")

    async def start_role() -> None:
        try:
            await role.startup()
        except Exception as exc:
            log.error(f"startup failed: {exc!r}")
            crash_code.append(1)
            stop.set()

    async def crash_later(seconds: float) -> None:
        await role.ready.wait()
        await asyncio.sleep(seconds)
        log.error(
            f"simulated fatal error after {seconds:g}s of readiness (--exit-after); exiting with code {args.exit_code}"
        )
        crash_code.append(args.exit_code)
        stop.set()

    background = [asyncio.create_task(start_role())]
    if args.exit_after is not None:
        background.append(asyncio.create_task(crash_later(args.exit_after)))
    await stop.wait()
    graceful = not crash_code
    if graceful:
        log.uvicorn(f"Shutting down (received {reason[0] if reason else 'stop'})")
    for task in background:
        task.cancel()
    await asyncio.wait(background)
    await role.shutdown(graceful)
    await server.close()
    if not graceful:
        return crash_code[0]
    log.uvicorn("Waiting for application shutdown.")
    log.uvicorn("Application shutdown complete.")
    log.uvicorn(f"Finished server process [{pid}]")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m standins",
        description="Fake LLM-serving processes (etcd-like kv, vLLM-like worker, Dynamo-like frontend).",
    )
    roles = parser.add_subparsers(dest="role", required=True, metavar="ROLE")

    def role(name: str, help_text: str, load_seconds: float) -> argparse.ArgumentParser:
        sub = roles.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
        sub.add_argument("--port", type=int, required=True, help="port to bind (0: any free port)")
        sub.add_argument(
            "--load-seconds", type=float, default=load_seconds, help="startup time before ready (%(default)s)"
        )
        sub.add_argument("--exit-after", type=float, metavar="SECONDS", help="crash this long after becoming ready")
        sub.add_argument("--exit-code", type=int, default=1, help="exit status of --exit-after (%(default)s)")
        sub.add_argument("--access-log", action="store_true", help="print one line per HTTP request")
        return sub

    role("kv", "etcd stand-in: an HTTP key-value store under /v1/kv/", 0.2)
    worker = role("worker", "vLLM stand-in: a prefill or decode worker serving /v1/chat/completions", 1.0)
    worker.add_argument("--role-name", choices=("prefill", "decode"), default="decode")
    worker.add_argument("--model", default=DEFAULT_MODEL)
    worker.add_argument("--kv", metavar="URL", help="register under workers/<role-name>/<port> in this kv")
    worker.add_argument("--tokens-per-second", type=float, default=200.0, help="generation pace (%(default)s)")
    worker.add_argument(
        "--max-num-seqs", type=int, default=0, metavar="N",
        help="requests generated at once; the rest wait (vllm:num_requests_waiting); 0: no limit",
    )  # fmt: skip
    frontend = role("frontend", "Dynamo frontend stand-in: routes chat completions to registered workers", 0.0)
    frontend.add_argument("--kv", metavar="URL", required=True, help="kv to discover workers in")
    frontend.add_argument("--model", default=DEFAULT_MODEL)
    frontend.add_argument(
        "--require-prefill",
        action="store_true",
        help="stay unhealthy until a prefill worker is registered too",
    )
    return parser


#: engine stand-ins, each parsing the real engine's own flags: ``python -m standins vllm serve MODEL ...``
ENGINES = {
    "vllm": ("vllm", "main"),
    "sglang": ("sglang", "main"),
    "sglang-router": ("sglang", "router_main"),
    "trtllm-serve": ("trtllm", "main"),
    "vajra": ("vajra", "main"),
    "engine-env": ("engine_env", "main"),  # not an engine: makes an env_path whose bin/ runs the above
}


def main(argv: list[str] | None = None) -> int:
    """Runs one stand-in until SIGTERM/SIGINT (exit 0) or a simulated crash (``--exit-code``)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in ENGINES:
        module, function = ENGINES[argv[0]]
        run: Callable[[list[str]], int] = getattr(importlib.import_module(f"standins.{module}"), function)
        return run(argv[1:])
    args = _parser().parse_args(argv)
    return asyncio.run(_run(args))
