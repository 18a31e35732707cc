"""Golden tests of the vLLM preset: command lines, env, ports, probes, phases and stop policy.

Checked against vLLM's docs and source (2026-11): ``vllm serve`` flags ``--host --port --served-model-name
--tensor-parallel-size --data-parallel-size --kv-transfer-config`` (docs/cli/serve); NixlConnector set-up
(docs/features/nixl_connector_usage.md: ``VLLM_NIXL_SIDE_CHANNEL_PORT`` unique per instance on a host,
``kv_role`` ``kv_both``; producer/consumer roles for the other connectors, docs/features/disagg_prefill.md);
log lines of vllm/v1/worker/gpu_model_runner.py ("Starting to load model", "Model loading took",
"Capturing CUDA graphs"), gpu_worker.py ("Available KV cache memory"), entrypoints/openai/api_server.py
("Starting vLLM API server %d on %s").
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import supervisor as sv
import topologies
from tests.preset_checks import bad_var_names_preset_and_var, twin_matches_builder, validate_exits_0

NIXL = '{{"kv_connector":"NixlConnector","kv_role":"kv_both"}}'


def serve(model: str = "Qwen/Qwen3-0.6B", name: str = "Qwen/Qwen3-0.6B", tp: int = 1) -> list[str]:
    return ["vllm", "serve", model, "--host", "{host}", "--port", "{port}", "--served-model-name", name,
            "--tensor-parallel-size", str(tp)]  # fmt: skip


def test_single_server_is_the_frontend() -> None:
    topology = topologies.vllm(model="Qwen/Qwen3-0.6B")
    (server,) = topology.services
    assert topology.name == "vllm" and server.name == "frontend"
    assert list(server.command) == serve()
    assert server.ports == (sv.PortSpec("port"),) and server.replicas == 1
    assert server.env == {}
    assert server.gpus == sv.GpuRequest(count=1)
    assert server.stop == sv.StopPolicy("SIGTERM", 30.0)
    assert server.restart.policy == "on-failure"
    ready = server.ready
    assert ready is not None and ready.timeout_seconds == 1800.0
    listed = {"data": [{"id": "Qwen/Qwen3-0.6B"}]}  # the parsed answer lists the served name
    assert ready.check == sv.HttpCheck("http://{host}:{port}/v1/models", 200, json=listed)
    assert server.alive is not None and server.alive.check == sv.HttpCheck("http://{host}:{port}/health", 200)
    assert server.metrics == "http://{host}:{port}/metrics"  # vLLM's API server always serves it
    assert [p.name for p in server.phases] == [
        "load_weights",
        "profile_memory",
        "kv_cache",
        "cuda_graphs",
        "api_server",
    ]
    assert "Engine core initialization failed" in server.fatal


def test_vllm_log_lines_start_their_phases() -> None:
    """Each phase begins on the line vLLM prints (wording from its source), in order."""
    lines = [
        "(EngineCore_DP0 pid=212) INFO 10-06 12:00:03 [gpu_model_runner.py:2338] Starting to load model /m...",
        "(EngineCore_DP0 pid=212) INFO 10-06 12:00:09 [gpu_model_runner.py:2370] Model loading took 4.2117 GiB and 5.31 seconds",
        "(EngineCore_DP0 pid=212) INFO 10-06 12:00:31 [gpu_worker.py:298] Available KV cache memory: 1.50 GiB",
        "Capturing CUDA graphs (mixed prefill-decode, PIECEWISE): 100%|##########| 11/11",
        "INFO 10-06 12:00:41 [api_server.py:1971] Starting vLLM API server 0 on http://127.0.0.1:8000",
    ]
    phases = topologies.vllm(model="m").services[0].phases
    for phase, line in zip(phases, lines, strict=True):
        assert re.search(phase.pattern, line), (phase.name, line)
        assert [p.name for p in phases if re.search(p.pattern, line)] == [phase.name]


@pytest.mark.parametrize(
    ("tp", "dp", "flags", "gpus"),
    [(2, 1, [], 2), (2, 2, ["--data-parallel-size", "2"], 4), (1, 4, ["--data-parallel-size", "4"], 4)],
)
def test_tensor_and_data_parallel(tp: int, dp: int, flags: list[str], gpus: int) -> None:
    (server,) = topologies.vllm(model="m", tp=tp, dp=dp).services
    assert list(server.command) == serve("m", "m", tp) + flags
    assert server.gpus == sv.GpuRequest(count=gpus)


def test_replicas_name_env_port_and_args(tmp_path: Path) -> None:
    (server,) = topologies.vllm(
        model="m", served_model_name="tiny", replicas=3, env_path=str(tmp_path), env={"HF_HUB_OFFLINE": "1"},
        args={"max_model_len": 4096, "enforce_eager": True, "trust_remote_code": False},
    ).services  # fmt: skip
    assert server.replicas == 3
    assert list(server.command) == [
        str(tmp_path / "bin" / "vllm"),
        *serve("m", "tiny")[1:],
        "--max-model-len",
        "4096",
        "--enforce-eager",
    ]
    assert server.env["PATH"].split(os.pathsep)[0] == str(tmp_path / "bin")
    assert server.env["VIRTUAL_ENV"] == str(tmp_path) and server.env["HF_HUB_OFFLINE"] == "1"
    (fixed,) = topologies.vllm(model="m", port=8123).services
    assert fixed.ports == (sv.PortSpec("port", 8123),)


def test_disaggregated_prefill_decode_behind_the_proxy() -> None:
    topology = topologies.vllm(model="m", mode="disagg", prefill=2, decode=1, tp=2, decode_args={"max_num_seqs": 64})
    prefill, decode, frontend = topology.services
    assert [s.name for s in topology.services] == ["prefill", "decode", "frontend"] and topology.name == "vllm-disagg"
    assert list(prefill.command) == [*serve("m", "m", 2), "--kv-transfer-config", NIXL]
    assert list(decode.command) == [*serve("m", "m", 2), "--kv-transfer-config", NIXL, "--max-num-seqs", "64"]
    assert (prefill.replicas, decode.replicas) == (2, 1)
    for server in (prefill, decode):
        assert server.ports == (sv.PortSpec("port"), sv.PortSpec("nixl"))
        assert server.env == {"VLLM_NIXL_SIDE_CHANNEL_HOST": "{host}", "VLLM_NIXL_SIDE_CHANNEL_PORT": "{nixl}"}
        assert server.gpus == sv.GpuRequest(count=2)
    assert list(frontend.command) == [
        "{python}", "-m", "topologies.pd_proxy", "--host", "{host}", "--port", "{port}",
        "--prefill", "{prefill.0.url}", "--prefill", "{prefill.1.url}", "--decode", "{decode.0.url}",
    ]  # fmt: skip
    assert frontend.depends_on == (sv.Dependency("prefill"), sv.Dependency("decode"))
    assert frontend.ready is not None and frontend.ready.check == sv.HttpCheck("http://{host}:{port}/health", 200)
    assert frontend.stop == sv.StopPolicy("SIGTERM", 5.0) and frontend.gpus is None


def test_each_disaggregated_role_takes_its_own_env_over_the_common_one() -> None:
    """LMCache's disaggregated example gives the prefiller and the decoder each its own LMCACHE_CONFIG_FILE
    (NIXL sender / receiver) and both the same PYTHONHASHSEED: one ``env`` for all servers could not."""
    prefill, decode, frontend = topologies.vllm(
        model="m",
        mode="disagg",
        kv_connector="LMCacheConnectorV1",
        env={"PYTHONHASHSEED": "0", "LMCACHE_CONFIG_FILE": "/common.yaml"},
        prefill_env={"LMCACHE_CONFIG_FILE": "/p.yaml"},
        decode_env={"LMCACHE_CONFIG_FILE": "/d.yaml", "UCX_TLS": "tcp"},
    ).services
    assert prefill.env == {"PYTHONHASHSEED": "0", "LMCACHE_CONFIG_FILE": "/p.yaml"}
    assert decode.env == {"PYTHONHASHSEED": "0", "LMCACHE_CONFIG_FILE": "/d.yaml", "UCX_TLS": "tcp"}
    assert "LMCACHE_CONFIG_FILE" not in frontend.env


def test_producer_consumer_connectors_get_their_roles() -> None:
    """vLLM examples/others/lmcache/disagg_prefill_lmcache_v1: kv_producer / kv_consumer, and its proxy is
    pd_proxy's protocol (prefill with max_tokens=1, then the decode server answers the request)."""
    prefill, decode, _ = topologies.vllm(model="m", mode="disagg", kv_connector="LMCacheConnectorV1").services
    assert prefill.command[-1] == '{{"kv_connector":"LMCacheConnectorV1","kv_role":"kv_producer"}}'
    assert decode.command[-1] == '{{"kv_connector":"LMCacheConnectorV1","kv_role":"kv_consumer"}}'
    assert prefill.env == {} and prefill.ports == (sv.PortSpec("port"),)


@pytest.mark.parametrize("connector", ["P2pNcclConnector", "MooncakeConnector", "MoRIIOConnector"])
def test_a_connector_that_needs_another_proxy_is_refused(connector: str) -> None:
    """P2pNcclConnector reads the peers' ZMQ addresses from the request id, which only vLLM's
    examples/online_serving/disaggregated_serving_p2p_nccl_xpyd/disagg_proxy_p2p_nccl_xpyd.py writes
    (vllm/distributed/kv_transfer/kv_connector/v1/p2p/p2p_nccl_engine.py ``parse_request_id`` raises "Request id
    ... does not contain hostname and port"): behind pd_proxy every request would fail, so the preset refuses it.
    Likewise MooncakeConnector (examples/online_serving/disaggregated_serving/mooncake_connector/
    mooncake_connector_proxy.py sends the decode ``do_remote_prefill`` with the prefill's
    ``bootstrap_server_host``/``bootstrap_server_port``) and MoRIIOConnector (moriio_toy_proxy_server.py: ZMQ
    registration, handshake/notify ports); vLLM main, 2025-11."""
    with pytest.raises(sv.ConfigError, match=f"var 'kv_connector': {connector} cannot work behind"):
        topologies.vllm(model="m", mode="disagg", kv_connector=connector)


def test_disaggregated_commands_resolve_to_real_ports(tmp_path: Path) -> None:
    plan = sv.make_plan(
        topologies.vllm(model="m", mode="disagg"), runs_dir=tmp_path, check_executables=False, gpus="8x80GB"
    )
    prefill, decode, frontend = (plan.service(n).replicas[0] for n in ("prefill", "decode", "frontend"))
    assert prefill.argv[-1] == '{"kv_connector":"NixlConnector","kv_role":"kv_both"}'
    assert (
        prefill.env["VLLM_NIXL_SIDE_CHANNEL_PORT"]
        == str(prefill.ports["nixl"])
        != decode.env["VLLM_NIXL_SIDE_CHANNEL_PORT"]
    )
    assert frontend.argv[-4:] == ("--prefill", prefill.url, "--decode", decode.url)


@pytest.mark.parametrize(
    "overrides",
    [{"model": "m"}, {"model": "m", "tp": 2, "dp": 2, "replicas": 2, "args": {"max_model_len": 4096}},
     {"model": "m", "mode": "disagg", "prefill": 2, "decode": 3, "kv_connector": "LMCacheConnectorV1"}],
)  # fmt: skip
def test_yaml_twin_builds_the_same_topology(overrides: dict[str, object]) -> None:
    twin_matches_builder("vllm", overrides)


@pytest.mark.parametrize("sets", [(), ("mode=disagg", "prefill=2")])
def test_validate_cli_accepts_the_preset(tmp_path: Path, sets: tuple[str, ...]) -> None:
    validate_exits_0("vllm", tmp_path, *sets)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"tp": 0}, "preset 'vllm', var 'tp': expected a whole number of at least 1, got 0"),
        ({"mode": "split"}, "preset 'vllm', var 'mode': expected one of single, disagg, got 'split'"),
        ({"port": 8000, "replicas": 2}, "preset 'vllm', var 'port': a fixed port needs replicas=1"),
        ({"mode": "disagg", "dp": 2}, "preset 'vllm', var 'dp':"),
        ({"mode": "disagg", "replicas": 2}, "preset 'vllm', var 'replicas':"),
        ({"decode": "two"}, "preset 'vllm', var 'decode': expected a whole number, got 'two'"),
        ({"args": "--x"}, "preset 'vllm', var 'args':"),
    ],
)
def test_bad_vars_name_the_preset_and_the_var(overrides: dict[str, object], expected: str) -> None:
    bad_var_names_preset_and_var("vllm", overrides, expected)


@pytest.mark.parametrize("preset", ["vllm", "sglang", "trtllm", "dynamo", "llamacpp"])
def test_builder_is_callable_after_its_module_was_imported(preset: str) -> None:
    """``import topologies.<p>`` binds the module to ``topologies.<p>``; calling it still builds (was a TypeError)."""
    code = f"import topologies.{preset}, topologies; print(type(topologies.{preset}(model='m')).__name__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.stdout.strip() == "Topology", done.stderr


@pytest.mark.parametrize(
    "overrides",
    [{"tp": 2, "dp": 2, "args": {"max_model_len": 4096, "enforce_eager": True}}, {"mode": "disagg", "prefill": 2}],
)
def test_the_stand_in_takes_every_flag_the_preset_passes(tmp_path: Path, overrides: dict[str, object]) -> None:
    """The ``vllm serve`` stand-in parses each server's resolved command (its parser refuses unknown flags)."""
    from standins.vllm import _parser

    topology = topologies.vllm(model="m", **overrides)  # type: ignore[arg-type]
    plan = sv.make_plan(topology, runs_dir=tmp_path, check_executables=False, gpus="8x80GB")
    servers = [replica for service in plan.services for replica in service.replicas if "serve" in replica.argv]
    assert servers
    for replica in servers:
        _parser().parse_args(list(replica.argv[1:]))
