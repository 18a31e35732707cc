"""vLLM, SGLang and TensorRT-LLM presets run end to end with stand-ins that take the engines' real flags."""

from __future__ import annotations

import contextlib
import json
import re
import socket
from pathlib import Path

import anyio
import attrs
import httpx
import pytest

import supervisor as sv
import topologies
from supervisor._host.proctable import marked_processes
from tests.engine_standins import MODEL, standin_env

pytestmark = pytest.mark.anyio

CASES = [
    ("vllm", {}),
    ("vllm", {"replicas": 2}),
    ("vllm", {"mode": "disagg", "prefill": 1, "decode": 2}),
    ("sglang", {}),
    ("sglang", {"tp": 2, "nodes_per_replica": 2}),  # no cluster: one process, every node's GPUs here
    ("sglang", {"mode": "disagg", "prefill": 2, "decode": 1}),
    ("trtllm", {}),
    ("trtllm", {"mode": "disagg", "prefill": 1, "decode": 2}),
    # tp x pp ranks, one GPU each (tensorrt_llm/commands/serve.py): the stand-in refuses fewer visible GPUs
    ("trtllm", {"tp": 2, "args": {"pp_size": 2, "cp_size": 1}}),
]


NODE = "8x80GB"  #: stand-ins rehearse on a simulated 8-GPU node: the GPU plan is the real one


@pytest.mark.parametrize(
    ("preset", "extra"), CASES, ids=[f"{p}-{'-'.join(map(str, e.values())) or 'single'}" for p, e in CASES]
)
async def test_preset_serves_completions_through_frontend(
    tmp_path: Path, runs_dir: Path, preset: str, extra: dict[str, object]
) -> None:
    """Every service turns ready, completions and chat answer through ``frontend`` (and its ``models`` route
    of ``api``), teardown leaves nothing."""
    env_path = standin_env(tmp_path / "env")
    topology = topologies.builder(preset)(model=MODEL, env_path=str(env_path), **extra)
    async with sv.launch(topology, runs_dir=runs_dir, gpus=NODE) as group:
        run_id = group.run_id
        assert marked_processes(run_id)
        async with httpx.AsyncClient(base_url=group["frontend"].url, timeout=20) as client:
            text = await client.post("/v1/completions", json={"model": MODEL, "prompt": "hello world", "max_tokens": 3})
            chat = await client.post(
                "/v1/chat/completions",
                json={"model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": "red fox"}]},
            )
            models = await client.get(group["frontend"].api["models"])  # the preset's route, as a full URL
        assert models.status_code == 200 and models.json()["data"][0]["id"] == MODEL, models.text
        assert text.status_code == 200, text.text
        assert text.json()["choices"][0]["text"] == "hello world hello"
        assert chat.status_code == 200, chat.text
        assert chat.json()["choices"][0]["message"]["content"] == "red fox"
        body = {"model": MODEL, "max_tokens": 2, "stream": True, "messages": [{"role": "user", "content": "blue sky"}]}
        async with httpx.AsyncClient(timeout=20) as client:
            streamed = await client.post(group["frontend"].url + "/v1/chat/completions", json=body)
        events = [line[6:] for line in streamed.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        assert "".join(json.loads(e)["choices"][0]["delta"]["content"] for e in events[:-1]) == "blue sky"
        if "prefill" in extra:  # the prefill side really took part
            async with httpx.AsyncClient(timeout=5) as client:
                counts = [await client.get(r.url + "/metrics") for r in group["prefill"].replicas]
            served = sum(int(re.search(r"standin_requests_total\{[^}]*\} (\d+)", c.text).group(1)) for c in counts)  # type: ignore[union-attr]
            assert served >= 2
        snapshot = await group.snapshot_metrics("served")  # the engines' /metrics (SGLang: --enable-metrics)
        declared = [r.name for r in group.replicas if r.plan.metrics]
        assert [e.replica for e in snapshot.endpoints] == declared and (declared or preset == "trtllm")
        assert not snapshot.failed, snapshot.failed
        logs = group.logs_dir
    assert not marked_processes(run_id)
    server = "frontend" if "prefill" not in extra else ("prefill.0" if extra["prefill"] > 1 else "prefill")
    output = (logs / f"{server}{'.0' if extra.get('replicas') else ''}.log").read_text()
    profile = topologies.builder(preset).__globals__["PROFILE"]
    positions = [re.search(phase.pattern, output) for phase in profile.phases]
    assert all(positions), [p.name for p, m in zip(profile.phases, positions, strict=True) if not m]
    starts = [m.start() for m in positions if m]
    assert starts == sorted(starts), "phases must be logged in the order the profile declares"


@pytest.mark.parametrize("probe", ["preset", "health"])
async def test_sglang_is_ready_only_once_warmed_up(
    tmp_path: Path, runs_dir: Path, monkeypatch: pytest.MonkeyPatch, probe: str
) -> None:
    """SGLang's ``/health`` is 200 before its warm-up; the preset waits for the warm-up, a ``/health`` probe would not."""
    monkeypatch.setenv("STANDIN_LOAD_SECONDS", "1.5")  # warm-up: 0.45 s after /health turns 200
    topology = topologies.sglang(model=MODEL, env_path=str(standin_env(tmp_path / "env")))
    if probe == "health":
        (server,) = topology.services
        topology = attrs.evolve(
            topology, services=[attrs.evolve(server, ready=sv.HttpCheck("http://127.0.0.1:{port}/health"))]
        )
    async with sv.launch(topology, runs_dir=runs_dir, gpus=NODE) as group, httpx.AsyncClient(timeout=5) as client:
        warmed = (await client.get(group["frontend"].url + "/health_generate")).status_code
    assert warmed == (200 if probe == "preset" else 503)


async def test_sglang_router_starts_while_port_29000_is_taken(tmp_path: Path, runs_dir: Path) -> None:
    """sgl-router's Prometheus exporter binds 29000 unless given ``--prometheus-port`` and dies when it is taken
    (sgl-router src/metrics.rs); the preset gives it a free port, so a router starts beside another one."""
    with socket.socket() as holder:
        with contextlib.suppress(OSError):  # held by someone else already: taken all the same
            holder.bind(("127.0.0.1", 29000))
            holder.listen()
        topology = topologies.sglang(model=MODEL, env_path=str(standin_env(tmp_path / "env")), mode="disagg")
        async with sv.launch(topology, runs_dir=runs_dir, gpus=NODE) as group, httpx.AsyncClient(timeout=20) as client:
            body = {"model": MODEL, "prompt": "a b", "max_tokens": 2}
            answer = await client.post(group["frontend"].url + "/v1/completions", json=body)
        assert answer.status_code == 200, answer.text


ESCAPING = [("vllm", {}), ("vllm", {"mode": "disagg"}), ("sglang", {}), ("sglang", {"mode": "disagg"})]


@pytest.mark.parametrize(("preset", "extra"), ESCAPING, ids=[f"{p}-{e.get('mode', 'single')}" for p, e in ESCAPING])
async def test_a_served_name_that_json_escapes_gets_ready(
    tmp_path: Path, runs_dir: Path, preset: str, extra: dict[str, object]
) -> None:
    """A served name with a quote, a backslash and ``é`` is listed by ``/v1/models`` JSON-escaped: vLLM's
    readiness check parses the answer and compares ids (a regex on the raw text never matched, and the
    start waited out the 30-minute load timeout); SGLang's readiness never reads the name."""
    name = 'a"b\\c-é'
    env_path = str(standin_env(tmp_path / "env"))
    topology = topologies.builder(preset)(model=MODEL, served_model_name=name, env_path=env_path, **extra)
    with anyio.fail_after(120):  # far below the probe's own 30-minute deadline
        async with sv.launch(topology, runs_dir=runs_dir, gpus=NODE) as group, httpx.AsyncClient(timeout=20) as client:
            listed = (await client.get(group["frontend"].url + "/v1/models")).json()
            answer = await client.post(
                group["frontend"].url + "/v1/completions", json={"model": name, "prompt": "a b", "max_tokens": 2}
            )
    assert [model["id"] for model in listed["data"]] == [name]
    assert answer.status_code == 200, answer.text
