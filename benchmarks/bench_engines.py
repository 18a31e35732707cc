"""The real presets, timed: Dynamo 1.6.1 (etcd + NATS + 1 prefill + 2 decode mocker workers + frontend) and
llama.cpp (2 llama-server replicas on a tiny GGUF). Per run: time to ready (launch until every service is
ready), first request latency (one chat completion, 8 tokens), teardown (until every process is gone).

    .ci/install-engines && python benchmarks/bench_engines.py [--runs 5] [--only dynamo llamacpp] [--json out.json]

Each figure comes with a baseline measured in the same run: ``_handrolled.py``, the hand-written asyncio
launcher a seed user would write, starting the same processes (argv, env, cwd and ports from the same plan)
in the same order, polling the same readiness URLs every 5 ms, and tearing down by signals. Supervisor and
baseline runs alternate (ABBA) to cancel drift; the ratio is supervisor median / baseline median.

The engines come from .ci/install-engines (or TOPOVISOR_DYNAMO_ENV / TOPOVISOR_LLAMA_SERVER); the models
are generated, as in the tests.
"""

from __future__ import annotations

import argparse
import contextlib
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _handrolled  # noqa: E402

import supervisor as sv  # noqa: E402
import topologies  # noqa: E402
from supervisor._plan.plan import make_plan  # noqa: E402
from tests import engines  # noqa: E402

FIGURES = ("ready", "first_request", "teardown")
MODES = ("supervisor", "handrolled")


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


async def first_request(client: httpx.AsyncClient, url: str, model: str, name: str) -> float:
    """One chat completion of 8 tokens; its latency in seconds (a bad answer is an error)."""
    body = {"model": model, "messages": [{"role": "user", "content": "w1 w2 w3"}], "max_tokens": 8}
    sent = time.perf_counter()
    response = await client.post(f"{url}/v1/chat/completions", json=body)
    latency = time.perf_counter() - sent
    if response.status_code != 200 or not response.json()["choices"][0]["message"]["content"].strip():
        raise RuntimeError(f"{name}: bad first answer: {response.status_code} {response.text[:300]}")
    return latency


def alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


async def supervised_run(
    topology: sv.Topology, model: str, runs_dir: Path, started: list[psutil.Process]
) -> dict[str, float]:
    begun = time.perf_counter()
    async with sv.launch(topology, runs_dir=runs_dir) as group:
        ready = time.perf_counter() - begun
        pids = [pid for service in group.services for pid in service.pids]
        started.extend(identify(pids))
        async with httpx.AsyncClient(timeout=60) as client:
            first = await first_request(client, group["frontend"].url, model, topology.name)
        stopping = time.perf_counter()
    teardown = time.perf_counter() - stopping
    if left := alive(pids):
        raise RuntimeError(f"{topology.name}: processes left after teardown: {left}")
    return {"ready": ready, "first_request": first, "teardown": teardown}


async def handrolled_run(
    topology: sv.Topology, model: str, runs_dir: Path, started: list[psutil.Process]
) -> dict[str, float]:
    """The same processes by hand; the plan (argv, env, ports) is made before the clock starts."""
    plan = make_plan(topology, runs_dir=runs_dir)
    url = plan.service("frontend").replicas[0].url
    assert url is not None
    begun = time.perf_counter()
    processes = await _handrolled.start(plan)
    ready = time.perf_counter() - begun
    pids = [p.proc.pid for p in processes]
    started.extend(identify(pids))
    try:  # as above: the client is closed before teardown (an open keep-alive connection delays llama-server)
        async with httpx.AsyncClient(timeout=60) as client:
            first = await first_request(client, url, model, topology.name)
    finally:
        stopping = time.perf_counter()
        await _handrolled.stop(plan, processes)
        teardown = time.perf_counter() - stopping
    if left := alive(pids):
        raise RuntimeError(f"{topology.name} (by hand): processes left after teardown: {left}")
    return {"ready": ready, "first_request": first, "teardown": teardown}


RUNNERS = {"supervisor": supervised_run, "handrolled": handrolled_run}


def summarize(samples: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    return {
        figure: {
            "median_ms": statistics.median(s[figure] for s in samples) * 1000,
            "min_ms": min(s[figure] for s in samples) * 1000,
            "max_ms": max(s[figure] for s in samples) * 1000,
        }
        for figure in FIGURES
    }


async def bench(preset: str, runs: int, started: list[psutil.Process]) -> dict[str, Any]:
    """A warm-up of each, then ``runs`` of each in ABBA order (supervisor first on even rounds)."""
    samples: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix=f"bench-{preset}-") as tmp:
        work = Path(tmp)
        topology, model = build(preset, work)
        for mode in MODES:  # warm-up: page cache, Python bytecode
            await RUNNERS[mode](topology, model, work / "runs", started)
        for index in range(runs):
            for mode in MODES if index % 2 == 0 else MODES[::-1]:
                samples[mode].append(await RUNNERS[mode](topology, model, work / "runs", started))
    result: dict[str, Any] = {mode: summarize(samples[mode]) for mode in MODES}
    result["ratio"] = {
        figure: result["supervisor"][figure]["median_ms"] / result["handrolled"][figure]["median_ms"]
        for figure in FIGURES
    }
    return result | {"runs": runs}


def table(results: dict[str, Any], runs: int) -> str:
    lines = [
        f"{'preset':<10} {'figure':<14} {'supervisor':>11} {'hand-rolled':>12} {'ratio':>6}"
        f"   (medians of {runs} runs each, ABBA; min-max in brackets)"
    ]
    for preset, figures in results.items():
        for figure in FIGURES:
            sup, hand = figures["supervisor"][figure], figures["handrolled"][figure]
            lines.append(
                f"{preset:<10} {figure:<14} {sup['median_ms']:>9.0f}ms {hand['median_ms']:>10.0f}ms"
                f" {figures['ratio'][figure]:>6.2f}   [{sup['min_ms']:.0f}-{sup['max_ms']:.0f}"
                f" vs {hand['min_ms']:.0f}-{hand['max_ms']:.0f}]"
            )
    return "\n".join(lines)


def identify(pids: list[int]) -> list[psutil.Process]:
    """The processes behind ``pids``, taken at once: a psutil.Process knows its start time, so a later check
    or kill never hits another process that reused the pid."""
    found = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            found.append(psutil.Process(pid))
    return found


def check_gone(started: list[psutil.Process]) -> list[int]:
    """Every process this script started must be gone (with our children); survivors are killed and returned."""
    survivors = {p.pid: p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE}
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.status() != psutil.STATUS_ZOMBIE:
                survivors.setdefault(child.pid, child)
    for process in survivors.values():
        with contextlib.suppress(psutil.Error):
            process.kill()  # psutil checks the start time: never a pid reused by someone else
    return sorted(survivors)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs per preset and mode (after a warm-up)")
    parser.add_argument("--only", nargs="+", choices=("dynamo", "llamacpp"), default=["dynamo", "llamacpp"])
    parser.add_argument("--json", type=Path, help="write the figures here too")
    options = parser.parse_args(argv)
    results: dict[str, Any] = {}
    started: list[psutil.Process] = []
    try:
        for preset in options.only:
            results[preset] = anyio.run(bench, preset, options.runs, started)
    finally:
        left = check_gone(started)
    if left:
        print(f"!! processes left behind (killed): {left}", file=sys.stderr)
        return 1
    print(table(results, options.runs))
    print(f"(all {len(started)} pids started are gone)")
    if options.json:
        options.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
