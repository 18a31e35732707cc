"""The preset configurations the cluster tests plan, and a plain-data view of a resolved plan.

``snapshot`` turns a plan into what a replica runs with (argv, env, cwd, probes, metrics, ports, node),
with the run directory and the interpreter replaced by fixed words, so a plan made today compares
with one recorded earlier (``tests/golden/presets_one_machine.json``: the single-machine plans).
"""

from __future__ import annotations

import itertools
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

import attrs

import supervisor as sv
import topologies

#: label -> (preset, builder arguments); every engine, every mode, every discovery backend
CASES: dict[str, tuple[str, dict[str, object]]] = {
    "vllm": ("vllm", {"model": "Qwen/Qwen3-0.6B", "replicas": 2, "tp": 2}),
    "vllm-dp": ("vllm", {"model": "Qwen/Qwen3-0.6B", "dp": 2}),
    "vllm-api-key": ("vllm", {"model": "Qwen/Qwen3-0.6B", "env": {"VLLM_API_KEY": "k"}}),
    "vllm-disagg": ("vllm", {"model": "Qwen/Qwen3-0.6B", "mode": "disagg", "prefill": 2, "decode": 2}),
    "vllm-disagg-lmcache": (
        "vllm",
        {
            "model": "Qwen/Qwen3-0.6B",
            "mode": "disagg",
            "kv_connector": "LMCacheConnectorV1",
            "env": {"PYTHONHASHSEED": "0"},  # prefill and decode must hash prompts alike (LMCache's example)
            "prefill_env": {"LMCACHE_CONFIG_FILE": "/etc/lmcache/prefiller.yaml"},
            "decode_env": {"LMCACHE_CONFIG_FILE": "/etc/lmcache/decoder.yaml"},
        },
    ),
    "sglang": ("sglang", {"model": "Qwen/Qwen3-0.6B", "replicas": 2}),
    "sglang-disagg": ("sglang", {"model": "Qwen/Qwen3-0.6B", "mode": "disagg", "prefill": 2, "decode": 2}),
    "trtllm": ("trtllm", {"model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "replicas": 2}),
    "trtllm-config": ("trtllm", {"model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "llm_config": {"a": 1}}),
    "trtllm-disagg": (
        "trtllm",
        {"model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "mode": "disagg", "prefill": 2, "decode": 2},
    ),
    "llamacpp": ("llamacpp", {"model": "/models/q.gguf", "replicas": 3}),
    "vajra": ("vajra", {"model": "meta-llama/Meta-Llama-3-8B-Instruct", "replicas": 2, "tp": 2}),
    "vajra-pp-key": ("vajra", {"model": "m", "pp": 2, "args": {"api_key": "k", "model_config_max_model_len": 4096}}),
    "dynamo-vllm": ("dynamo", {"model": "Qwen/Qwen3-0.6B", "prefill": 2, "decode": 2}),
    "dynamo-sglang": ("dynamo", {"model": "Qwen/Qwen3-0.6B", "engine": "sglang"}),
    "dynamo-trtllm": ("dynamo", {"model": "Qwen/Qwen3-0.6B", "engine": "trtllm"}),
    "dynamo-mocker": ("dynamo", {"model": "/models/tok", "engine": "mocker", "prefill": 1, "decode": 2}),
    "dynamo-agg": ("dynamo", {"model": "Qwen/Qwen3-0.6B", "prefill": 0, "decode": 2}),
    "dynamo-file": ("dynamo", {"model": "/models/tok", "engine": "mocker", "discovery": "file"}),
}

#: the cases whose preset runs on a cluster (Vajra refuses ``cluster=``: it needs physical GPU ids)
ON_CLUSTER = sorted(label for label, (preset, _) in CASES.items() if preset != "vajra")

RUNS = "/tmp/topovisor-test-runs"
_NUMBER = re.compile(r"(?<![\d.])\d{4,5}(?![\d.])")  #: a port-sized number, not part of an address


def build(label: str, **extra: object) -> sv.Topology:
    preset, arguments = CASES[label]
    return topologies.builder(preset)(**arguments, **extra)  # type: ignore[no-any-return]


def counting_ports(start: int = 21000) -> tuple[Callable[[], int], Callable[[int], None]]:
    """A port allocator that hands out start, start+1, ...: plans that compare across runs."""
    taken: set[int] = set()
    numbers: Iterator[int] = itertools.count(start)

    def allocate() -> int:
        return next(n for n in numbers if n not in taken)

    return allocate, taken.add


def plan_of(topology: sv.Topology, nodes: Any = None) -> sv.Plan:
    allocate, reserve = counting_ports()
    return sv.make_plan(
        topology,
        runs_dir=RUNS,
        allocate_port=allocate,
        reserve_port=reserve,
        check_executables=False,
        gpus="8x80GB",
        nodes=nodes,
    )


def snapshot(plan: sv.Plan) -> dict[str, dict[str, object]]:
    """Replica name -> what it runs with, as plain data (run dir and interpreter as fixed words)."""

    names = {
        str(number): f"<{replica.name}.{port}>"
        for service in plan.services
        for replica in service.replicas
        for port, number in replica.ports.items()
    }

    def text(value: str) -> str:  # ports by name: some come from the kernel's free ones, not the counter
        value = value.replace(str(plan.run_dir), "RUN_DIR").replace(sys.executable, "PYTHON")
        return _NUMBER.sub(lambda match: names.get(match.group(0), match.group(0)), value)

    def probe(value: sv.Probe | None) -> object:
        return None if value is None else text(repr(attrs.evolve(value)))

    found: dict[str, dict[str, object]] = {}
    for service in plan.services:
        for replica in service.replicas:
            found[replica.name] = {
                "argv": [text(arg) for arg in replica.argv],
                "env": {key: text(value) for key, value in sorted(replica.env.items())},
                "cwd": replica.cwd,
                "ready": probe(replica.ready),
                "alive": probe(replica.alive),
                "metrics": None if replica.metrics is None else text(replica.metrics),
                "ports": sorted(replica.ports),
                "host": replica.host,
                "url": None if replica.url is None else text(replica.url),
            }
    return found


if __name__ == "__main__":  # python -m tests.preset_cases: rewrite the golden file (only for an intended change)
    import json
    from pathlib import Path

    recorded = {label: snapshot(plan_of(build(label))) for label in CASES}
    path = Path(__file__).parent / "golden" / "presets_one_machine.json"
    path.write_text(json.dumps(recorded, indent=1, sort_keys=True))
    print(f"wrote {path}")
