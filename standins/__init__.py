"""Stand-ins for an LLM-serving stack: etcd-like ``kv``, vLLM-like ``worker``, Dynamo-like ``frontend``.

The demo and the tests need processes that start, log, turn ready, serve and die like real GPU servers,
without GPUs. Not part of the library: this package imports the standard library only (never
``supervisor``), so a process starts in tens of milliseconds. Run as::

    python -m standins {kv,worker,frontend} --port N [options]
    python -m standins {vllm,sglang,sglang-router,trtllm-serve} ENGINE-FLAGS   # the engines' own flags

Every role prints ``INFO:     Uvicorn running on http://HOST:PORT (Press CTRL+C to quit)`` once bound and
exactly one ``INFO:     Application startup complete.`` line at the moment ``GET /health`` turns 200.
SIGTERM/SIGINT exit 0 within milliseconds; ``--exit-after S`` simulates a crash S seconds after readiness.
"""

from __future__ import annotations

from ._cli import main

__all__ = ["main"]
