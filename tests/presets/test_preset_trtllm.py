"""Golden tests of the TensorRT-LLM preset: command lines, config files, probes, phases and stop policy.

Checked against TensorRT-LLM's source and docs (2026-11): tensorrt_llm/commands/serve.py (click options
``--host --port --backend --tp_size`` (alias of ``--tensor_parallel_size``) ``--extra_llm_api_options``
(alias ``--config``); ``disaggregated -c/--config_file``), docs/source/features/disagg-serving.md and
examples/disaggregated/README.md (``hostname``, ``port``, ``backend``, ``context_servers`` and
``generation_servers`` with ``num_instances`` and ``urls``; ``cache_transceiver_config.backend``;
``disable_overlap_scheduler`` on context servers), and the log of a real 1.3.0rc15 context server
("Using LLM with PyTorch backend", "Run warmup with", "Creating CUDA graph instances").
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

import supervisor as sv
import topologies
from tests.preset_checks import bad_var_names_preset_and_var, twin_matches_builder, validate_exits_0


def serve(model: str = "m", tp: int = 1) -> list[str]:
    return [
        "trtllm-serve",
        model,
        "--host",
        "{host}",
        "--port",
        "{port}",
        "--backend",
        "pytorch",
        "--tp_size",
        str(tp),
    ]


def test_single_server_is_the_frontend() -> None:
    topology = topologies.trtllm(model="m", tp=2, args={"max_batch_size": 64, "trust_remote_code": True})
    (server,) = topology.services
    assert topology.name == "trtllm" and server.name == "frontend"
    assert list(server.command) == [*serve(tp=2), "--max_batch_size", "64", "--trust_remote_code"]  # snake_case kept
    assert server.gpus == sv.GpuRequest(count=2, vendor="nvidia") and server.depends_on == ()  # CUDA only
    assert server.stop == sv.StopPolicy("SIGTERM", 30.0)
    assert server.ready is not None and server.ready.check == sv.HttpCheck("http://{host}:{port}/health", 200)
    assert [p.name for p in server.phases] == [
        "init",
        "load_weights",
        "kv_cache",
        "warmup",
        "cuda_graphs",
        "api_server",
    ]


def test_trtllm_log_lines_start_their_phases() -> None:
    lines = [
        "[05/26/2026-23:56:16] [TRT-LLM] [I] [llmapi  ] Using LLM with PyTorch backend",
        "[05/26/2026-23:57:18] [TRT-LLM] [I] [_torch  ] Use 2.05 GB for model weights.",
        "[05/26/2026-23:57:21] [TRT-LLM] [I] [_torch  ] Memory used at after loading weights (inside torch) in memory usage profiling: 2.31 GiB",
        "[05/26/2026-23:57:26] [TRT-LLM] [I] [_torch  ] Run warmup with 1 tokens, include 0 generation tokens",
        "[05/26/2026-23:57:35] [TRT-LLM] [I] [_torch  ] Creating CUDA graph instances for 34 batch sizes.",
        "INFO:     Uvicorn running on http://localhost:8001 (Press CTRL+C to quit)",
    ]
    phases = topologies.trtllm(model="m").services[0].phases
    for phase, line in zip(phases, lines, strict=True):
        assert [p.name for p in phases if re.search(p.pattern, line)] == [phase.name]


def test_disaggregated_servers_start_after_their_config_is_written() -> None:
    topology = topologies.trtllm(model="m", mode="disagg", prefill=2, decode=1)
    config, prefill, decode, frontend = topology.services
    assert [s.name for s in topology.services] == ["config", "prefill", "decode", "frontend"]
    assert list(prefill.command) == [*serve(), "--extra_llm_api_options", "{run_dir}/trtllm/context.yaml"]
    assert list(decode.command) == [*serve(), "--extra_llm_api_options", "{run_dir}/trtllm/generation.yaml"]
    assert prefill.depends_on == decode.depends_on == (sv.Dependency("config", "completed"),)
    assert list(frontend.command) == ["trtllm-serve", "disaggregated", "-c", "{run_dir}/trtllm/disagg.yaml"]
    assert frontend.depends_on == (
        sv.Dependency("config", "completed"),
        sv.Dependency("prefill"),
        sv.Dependency("decode"),
    )
    assert config.command[:2] == ("{python}", "-c") and config.restart.policy == "no" and config.gpus is None


def test_config_files_hold_the_planned_ports(tmp_path: Path) -> None:
    """Run the config job's own command: the files are JSON (valid YAML) with every server's real address."""
    topology = topologies.trtllm(
        model="m", mode="disagg", prefill=2, decode=1, cache_backend="UCX", llm_config={"x": {"y": 1}}
    )
    plan = sv.make_plan(topology, runs_dir=tmp_path, check_executables=False, gpus="8x80GB")
    subprocess.run(plan.service("config").replicas[0].argv, check=True, capture_output=True, timeout=30)
    folder = plan.run_dir / "trtllm"
    assert json.loads((folder / "context.yaml").read_text()) == {
        "disable_overlap_scheduler": True, "cache_transceiver_config": {"backend": "UCX"}, "x": {"y": 1}}  # fmt: skip
    assert json.loads((folder / "generation.yaml").read_text()) == {
        "cache_transceiver_config": {"backend": "UCX"},
        "x": {"y": 1},
    }
    disagg = json.loads((folder / "disagg.yaml").read_text())
    ports = {name: [r.port for r in plan.service(name).replicas] for name in ("prefill", "decode", "frontend")}
    assert disagg == {
        "hostname": "127.0.0.1", "port": ports["frontend"][0], "backend": "pytorch",
        "context_servers": {"num_instances": 2, "urls": [f"127.0.0.1:{p}" for p in ports["prefill"]]},
        "generation_servers": {"num_instances": 1, "urls": [f"127.0.0.1:{p}" for p in ports["decode"]]},
    }  # fmt: skip


def test_extra_llm_options_in_single_mode_go_through_a_config_file() -> None:
    config, server = topologies.trtllm(model="m", llm_config={"enable_iter_perf_stats": True}).services
    assert server.command[-2:] == ("--extra_llm_api_options", "{run_dir}/trtllm/server.yaml")
    assert server.depends_on == (sv.Dependency("config", "completed"),)
    assert config.command[-1] == '{{\n  "enable_iter_perf_stats": true\n}}'


@pytest.mark.parametrize(
    "overrides",
    [{"model": "m"}, {"model": "m", "tp": 8, "args": {"max_num_tokens": 8192}},
     {"model": "m", "mode": "disagg", "prefill": 3, "decode": 2, "llm_config": {"kv_cache_config": {"free_gpu_memory_fraction": 0.8}}}],
)  # fmt: skip
def test_yaml_twin_builds_the_same_topology(overrides: dict[str, object]) -> None:
    twin_matches_builder("trtllm", overrides)


@pytest.mark.parametrize("sets", [(), ("mode=disagg",)])
def test_validate_cli_accepts_the_preset(tmp_path: Path, sets: tuple[str, ...]) -> None:
    validate_exits_0("trtllm", tmp_path, *sets)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"served_model_name": "tiny"},
            "preset 'trtllm', var 'served_model_name': trtllm-serve serves the model under MODEL",
        ),
        ({"tp": -1}, "preset 'trtllm', var 'tp': expected a whole number of at least 1, got -1"),
        ({"mode": "agg"}, "preset 'trtllm', var 'mode': expected one of single, disagg, got 'agg'"),
        ({"llm_config": "[1]"}, "preset 'trtllm', var 'llm_config': expected a mapping"),
    ],
)
def test_bad_vars_name_the_preset_and_the_var(overrides: dict[str, object], expected: str) -> None:
    bad_var_names_preset_and_var("trtllm", overrides, expected)


# tensorrt_llm/commands/serve.py (NVIDIA/TensorRT-LLM main, 2026-11; same in 1.3): world size is
# tensor_parallel_size (--tp_size) x pipeline_parallel_size (--pp_size) x context_parallel_size (--cp_size),
# one rank per GPU, and the --extra_llm_api_options file's keys override the flags
# (update_llm_args_with_extra_dict). A server given tp GPUs while it starts tp x pp ranks cannot start.
@pytest.mark.parametrize(
    ("kwargs", "gpus"),
    [
        ({"tp": 2, "args": {"pp_size": 2}}, 4),
        ({"tp": 2, "args": {"pipeline_parallel_size": 3}}, 6),
        ({"tp": 1, "args": ["--pp_size", "2", "--cp_size=2"]}, 4),
        ({"tp": 2, "llm_config": {"pipeline_parallel_size": 2}}, 4),
        ({"tp": 1, "args": {"pp_size": 4}, "llm_config": {"pipeline_parallel_size": 2}}, 2),  # the file wins
        ({"tp": 2, "mode": "disagg", "args": {"pp_size": 2}}, 4),
    ],
)
def test_each_server_gets_a_gpu_per_rank(kwargs: dict[str, object], gpus: int) -> None:
    topology = topologies.trtllm(model="m", **kwargs)  # type: ignore[arg-type]
    servers = [service for service in topology.services if service.gpus is not None]
    assert servers and all(service.gpus == sv.GpuRequest(count=gpus, vendor="nvidia") for service in servers)
    assert {service.name for service in servers} == ({"prefill", "decode"} if "mode" in kwargs else {"frontend"})


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"args": {"tp_size": 4}}, "preset 'trtllm', var 'args': set tp=, not tp_size"),
        ({"llm_config": {"tensor_parallel_size": 4}}, "preset 'trtllm', var 'llm_config': set tp=, not tensor_"),
        ({"args": {"pp_size": "two"}}, "preset 'trtllm', var 'args': pp_size: expected a whole number"),
    ],
)
def test_parallel_sizes_that_contradict_tp_are_refused(kwargs: dict[str, object], expected: str) -> None:
    with pytest.raises(sv.ConfigError, match=re.escape(expected)):
        topologies.trtllm(model="m", **kwargs)  # type: ignore[arg-type]
