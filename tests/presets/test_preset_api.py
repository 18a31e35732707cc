"""Each preset declares its server's routes (``api``): the OpenAI ones every engine here serves, and the
engine's own (SGLang's ``/health_generate``, Dynamo's per-model readiness...), as the engines' sources
and docs name them (vLLM ``entrypoints/openai/api_server.py``, SGLang ``srt/entrypoints/http_server.py``,
TensorRT-LLM ``serve/openai_server.py``, llama.cpp ``tools/server/README.md``, Dynamo per ENGINES.md,
Vajra per VAJRA.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

import supervisor as sv
import topologies

OPENAI = {"models": "/v1/models", "chat_completions": "/v1/chat/completions", "completions": "/v1/completions"}


def frontend_api(topology: sv.Topology, tmp_path: Path) -> dict[str, str]:
    plan = sv.make_plan(topology, runs_dir=tmp_path, check_executables=False, gpus="8x80GB")
    (frontend,) = [s for s in plan.services if s.name == "frontend"]
    return dict(frontend.replicas[0].api)


def test_vllm_lists_health_models_chat_completions_completions_and_metrics(tmp_path: Path) -> None:
    (server,) = topologies.vllm(model="Qwen/Qwen3-0.6B").services
    assert dict(server.api) == {"health": "/health", **OPENAI, "metrics": "/metrics"}
    api = frontend_api(topologies.vllm(model="Qwen/Qwen3-0.6B", port=18000), tmp_path)
    base = "http://127.0.0.1:18000"
    assert api == {
        "health": f"{base}/health",
        "models": f"{base}/v1/models",
        "chat_completions": f"{base}/v1/chat/completions",
        "completions": f"{base}/v1/completions",
        "metrics": f"{base}/metrics",
    }  # its probes (/v1/models, /health) and metrics are these routes: nothing listed twice


@pytest.mark.parametrize(
    ("topology", "own"),
    [
        (lambda: topologies.sglang(model="m"), {"health": "/health", "health_generate": "/health_generate"}),
        (lambda: topologies.trtllm(model="m"), {"health": "/health", "version": "/version"}),
        (lambda: topologies.llamacpp(model="/m.gguf"), {"health": "/health", "metrics": "/metrics"}),
        (lambda: topologies.vajra(model="m"), {}),  # no /health, no /metrics
        (lambda: topologies.dynamo(model="org/m", engine="mocker"), {"model_ready": "/v1/models/org%2Fm/ready"}),
        (lambda: topologies.vllm(model="m", mode="disagg"), {"health": "/health"}),  # pd_proxy
        (lambda: topologies.sglang(model="m", mode="disagg"), {"readiness": "/readiness", "liveness": "/liveness"}),
    ],
)
def test_every_presets_frontend_lists_the_openai_routes_and_its_engines_own(
    topology: object, own: dict[str, str], tmp_path: Path
) -> None:
    built = topology()  # type: ignore[operator]
    api = frontend_api(built, tmp_path)
    url = api["models"].removesuffix("/v1/models")
    for name, path in {**OPENAI, **own}.items():
        assert api[name] == url + path, name


def test_dynamo_workers_list_their_status_servers_routes(tmp_path: Path) -> None:
    """A worker's first port is its status server (``DYN_SYSTEM_PORT``): health, live and metrics there."""
    plan = sv.make_plan(topologies.dynamo(model="m", engine="mocker"), runs_dir=tmp_path, check_executables=False)
    decode = next(s for s in plan.services if s.name == "decode").replicas[0]
    status = f"http://127.0.0.1:{decode.ports['status']}"
    assert dict(decode.api) == {"health": f"{status}/health", "live": f"{status}/live", "metrics": f"{status}/metrics"}
