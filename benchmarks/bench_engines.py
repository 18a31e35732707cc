"""The real presets, timed: Dynamo 1.6.1 (etcd + NATS + 1 prefill + 2 decode mocker workers + frontend) and
llama.cpp (2 llama-server replicas on a tiny GGUF). Per run: time to ready (launch until every service is
ready), first request latency (one chat completion, 8 tokens), teardown (until every process is gone).

    .ci/install-engines && python benchmarks/bench_engines.py [--runs 5] [--only dynamo llamacpp] [--json out.json]

The engines come from .ci/install-engines (or TOPOVISOR_DYNAMO_ENV / TOPOVISOR_LLAMA_SERVER); the models
are generated, as in the tests.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import supervisor as sv  # noqa: E402
import topologies  # noqa: E402
from tests import engines  # noqa: E402

FIGURES = ("ready", "first_request", "teardown")


def build(preset: str, work: Path) -> tuple[sv.Topology, str]:
    """The topology and the model name its clients send."""
    if preset == "dynamo":
        model = engines.write_mocker_model(work / "mocker-model")
        topology = topologies.dynamo(
            engine="mocker", model=str(model), served_model_name="tiny", prefill=1, decode=2,
            env_path=str(engines.find_dynamo_env()),
        )  # fmt: skip
        engines.find_etcd_nats()
        return topology, "tiny"
    gguf = engines.write_tiny_gguf(work / "tiny.gguf")
    topology = topologies.llamacpp(
        model=str(gguf), replicas=2, llama_server=engines.find_llama_server(), args={"threads": 1}
    )
    return topology, "tiny"


async def one_run(topology: sv.Topology, model: str, runs_dir: Path) -> dict[str, float]:
    body = {"model": model, "messages": [{"role": "user", "content": "w1 w2 w3"}], "max_tokens": 8}
    started = time.perf_counter()
    async with sv.launch(topology, runs_dir=runs_dir) as group:
        ready = time.perf_counter() - started
        pids = [pid for service in group.services for pid in service.pids]
        async with httpx.AsyncClient(timeout=60) as client:
            sent = time.perf_counter()
            response = await client.post(f"{group['frontend'].url}/v1/chat/completions", json=body)
            first = time.perf_counter() - sent
        if response.status_code != 200 or not response.json()["choices"][0]["message"]["content"].strip():
            raise RuntimeError(f"{topology.name}: bad first answer: {response.status_code} {response.text[:300]}")
        stopping = time.perf_counter()
    teardown = time.perf_counter() - stopping
    left = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    if left:
        raise RuntimeError(f"{topology.name}: processes left after teardown: {left}")
    return {"ready": ready, "first_request": first, "teardown": teardown}


async def bench(preset: str, runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{preset}-") as tmp:
        work = Path(tmp)
        topology, model = build(preset, work)
        await one_run(topology, model, work / "runs")  # warm-up: page cache, Python bytecode
        samples = [await one_run(topology, model, work / "runs") for _ in range(runs)]
    return {
        figure: {
            "median_ms": statistics.median(s[figure] for s in samples) * 1000,
            "min_ms": min(s[figure] for s in samples) * 1000,
            "max_ms": max(s[figure] for s in samples) * 1000,
        }
        for figure in FIGURES
    } | {"runs": runs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs per preset (after one warm-up)")
    parser.add_argument("--only", nargs="+", choices=("dynamo", "llamacpp"), default=["dynamo", "llamacpp"])
    parser.add_argument("--json", type=Path, help="write the figures here too")
    options = parser.parse_args(argv)
    results: dict[str, Any] = {}
    for preset in options.only:
        results[preset] = anyio.run(bench, preset, options.runs)
    print(f"{'preset':<10} {'figure':<14} {'median':>9} {'min':>9} {'max':>9}   ({options.runs} runs each)")
    for preset, figures in results.items():
        for figure in FIGURES:
            row = figures[figure]
            print(
                f"{preset:<10} {figure:<14} {row['median_ms']:>7.0f}ms {row['min_ms']:>7.0f}ms {row['max_ms']:>7.0f}ms"
            )
    if options.json:
        options.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
