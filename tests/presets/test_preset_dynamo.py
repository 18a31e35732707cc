"""Golden tests of the Dynamo preset: the commands, env, ports, probes and policies it builds per engine."""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

import supervisor as sv
import topologies
from topologies.dynamo import dynamo

ROOT = Path(__file__).parents[2]
PY = "{python}"
ETCD_ENV = {
    "DYN_DISCOVERY_BACKEND": "etcd",
    "ETCD_ENDPOINTS": "http://{etcd.host}:{etcd.port}",
    "NATS_SERVER": "nats://{nats.host}:{nats.port}",
}
LOOPBACK = {
    "DYN_TCP_RPC_HOST": "{host}",
    "DYN_EVENT_PLANE_HOST": "{host}",
    "DYN_TCP_RESPONSE_STREAM_HOST": "{host}",
}
WORKER_ENV = {
    **ETCD_ENV,
    **LOOPBACK,
    "DYN_SYSTEM_HOST": "{host}",
    "DYN_SYSTEM_PORT": "{status}",
    "DYN_SYSTEM_USE_ENDPOINT_HEALTH_STATUS": '["generate"]',
}
NIXL = '{{"kv_connector":"NixlConnector","kv_role":"kv_both"}}'
VLLM_NIXL = {"VLLM_NIXL_SIDE_CHANNEL_HOST": "{host}", "VLLM_NIXL_SIDE_CHANNEL_PORT": "{nixl}"}


def services(topology: sv.Topology) -> dict[str, sv.Service]:
    return {service.name: service for service in topology.services}


def test_disaggregated_vllm_golden() -> None:
    """The documented layout: etcd, NATS, prefill and decode ``dynamo.vllm`` workers on tp GPUs, the frontend."""
    topo = dynamo(engine="vllm", model="Qwen/Qwen3-0.6B", prefill=2, decode=3, tp=2)
    found = services(topo)
    assert list(found) == ["etcd", "nats", "prefill", "decode", "frontend"]
    assert topo.name == "dynamo-vllm"
    prefill, decode, frontend = found["prefill"], found["decode"], found["frontend"]
    base = [PY, "-m", "dynamo.vllm", "--model", "Qwen/Qwen3-0.6B", "--served-model-name", "Qwen/Qwen3-0.6B",
            "--tensor-parallel-size", "2"]  # fmt: skip
    assert list(prefill.command) == [*base, "--disaggregation-mode", "prefill", "--kv-transfer-config", NIXL]
    assert list(decode.command) == [*base, "--disaggregation-mode", "decode", "--kv-transfer-config", NIXL]
    assert (prefill.replicas, decode.replicas) == (2, 3)
    for worker in (prefill, decode):
        assert dict(worker.env) == {**WORKER_ENV, **VLLM_NIXL}  # a hub id: HF_HUB_OFFLINE is not forced
        assert worker.ports == (sv.PortSpec("status", below=32768), sv.PortSpec("nixl"))
        assert worker.ready == sv.Probe(sv.HttpCheck("http://{host}:{status}/health"))
        assert worker.metrics == "http://{host}:{status}/metrics"  # the status server's Prometheus text
        assert worker.gpus == sv.GpuRequest(count=2)
        assert worker.restart.policy == "always"
        assert worker.stop == sv.StopPolicy("SIGTERM", grace_seconds=30)
        assert [d.service for d in worker.depends_on] == ["etcd", "nats"]
        assert [phase.name for phase in worker.phases][:3] == ["runtime", "engine", "weights"]
    assert list(frontend.command) == [PY, "-m", "dynamo.frontend", "--http-host", "{host}", "--http-port", "{port}"]
    assert dict(frontend.env) == {**ETCD_ENV, **LOOPBACK}
    assert frontend.ready == sv.Probe(sv.HttpCheck("http://{host}:{port}/v1/models/Qwen%2FQwen3-0.6B/ready"))
    assert frontend.restart.policy == "always"  # it exits 0 by itself when etcd is gone
    assert frontend.metrics == "http://{host}:{port}/metrics"
    assert frontend.gpus is None and frontend.ports == (sv.PortSpec("port"),)


def test_sglang_roles_and_bootstrap_port() -> None:
    """SGLang: its own flags (--model-path, --tp), NIXL transfer, a bootstrap port per prefill worker."""
    found = services(dynamo(engine="sglang", model="Qwen/Qwen3-0.6B", served_model_name="qwen", tp=4))
    base = [PY, "-m", "dynamo.sglang", "--model-path", "Qwen/Qwen3-0.6B", "--served-model-name", "qwen", "--tp", "4"]
    assert list(found["prefill"].command) == [
        *base, "--disaggregation-mode", "prefill", "--disaggregation-transfer-backend", "nixl", "--host", "{host}",
        "--disaggregation-bootstrap-port", "{bootstrap}",
    ]  # fmt: skip
    assert list(found["decode"].command) == [
        *base, "--disaggregation-mode", "decode", "--disaggregation-transfer-backend", "nixl", "--host", "{host}",
    ]  # fmt: skip
    assert [p.name for p in found["prefill"].ports] == ["status", "bootstrap"]
    assert found["frontend"].ready.check.url.endswith("/v1/models/qwen/ready")  # type: ignore[union-attr]


def test_trtllm_and_aggregated_mode() -> None:
    """prefill=0: aggregated workers only, named decode, without a role flag."""
    found = services(dynamo(engine="trtllm", model="Qwen/Qwen3-0.6B", prefill=0, decode=2))
    assert list(found) == ["etcd", "nats", "decode", "frontend"]
    assert list(found["decode"].command) == [
        PY, "-m", "dynamo.trtllm", "--model", "Qwen/Qwen3-0.6B", "--served-model-name", "Qwen/Qwen3-0.6B",
        "--tensor-parallel-size", "1",
    ]  # fmt: skip
    assert found["decode"].replicas == 2


def test_mocker_local_model_file_discovery_env_path_and_args() -> None:
    """The mocker: no GPUs, a local tokenizer directory (offline hub), file discovery, the env's python."""
    topo = dynamo(
        engine="mocker", model="/models/tiny/", decode=2, discovery="file", env_path="/opt/dyn",
        args={"speedup_ratio": 10}, prefill_args=["--num-workers", "1"], frontend_args={"router_mode": "kv"},
        env={"RUST_LOG": "debug"},
    )  # fmt: skip
    found = services(topo)
    assert list(found) == ["prefill", "decode", "frontend"]  # no etcd, no NATS
    assert list(found["prefill"].command) == [
        "/opt/dyn/bin/python", "-m", "dynamo.mocker", "--model-path", "/models/tiny/", "--model-name", "tiny",
        "--disaggregation-mode", "prefill", "--speedup-ratio", "10", "--num-workers", "1",
    ]  # fmt: skip
    assert list(found["decode"].command)[-4:] == ["--disaggregation-mode", "decode", "--speedup-ratio", "10"]
    assert list(found["frontend"].command)[-2:] == ["--router-mode", "kv"]
    env = dict(found["decode"].env)
    assert env["DYN_DISCOVERY_BACKEND"] == "file" and env["DYN_FILE_KV"] == "{run_dir}/discovery"
    assert "ETCD_ENDPOINTS" not in env and "NATS_SERVER" not in env
    assert env["HF_HUB_OFFLINE"] == "1" and env["RUST_LOG"] == "debug"
    assert env["PATH"].startswith("/opt/dyn/bin:") and env["VIRTUAL_ENV"] == "/opt/dyn"
    assert found["decode"].gpus is None and found["decode"].depends_on == ()
    assert found["decode"].stop.grace_seconds == 10


def test_infra_services_golden() -> None:
    """etcd and NATS on loopback, data under the run dir, ready on their health endpoints."""
    found = services(dynamo(engine="mocker", model="/m", port=8000))
    assert list(found["etcd"].command) == [
        "etcd", "--data-dir", "{run_dir}/etcd",
        "--listen-client-urls", "http://{host}:{port}", "--advertise-client-urls", "http://{host}:{port}",
        "--listen-peer-urls", "http://{host}:{peer}", "--initial-advertise-peer-urls", "http://{host}:{peer}",
        "--initial-cluster", "default=http://{host}:{peer}",
    ]  # fmt: skip
    assert found["etcd"].ready.check == sv.HttpCheck("http://{host}:{port}/health", json={"health": "true"})  # type: ignore[union-attr]
    assert list(found["nats"].command) == [
        "nats-server", "-js", "-a", "{host}", "-p", "{port}", "-m", "{monitor}", "-sd", "{run_dir}/nats",
    ]  # fmt: skip
    assert found["nats"].ready.check == sv.HttpCheck("http://{host}:{monitor}/healthz")  # type: ignore[union-attr]
    assert found["frontend"].ports == (sv.PortSpec("port", 8000),)


def test_plan_resolves_every_template_and_keeps_status_ports_low() -> None:
    """Planned: each worker replica its own status port below 32768 (plain free ports are all above it here)."""
    topo = dynamo(engine="mocker", model="/m", prefill=2, decode=3)
    ephemeral = itertools.count(40000)
    plan = sv.make_plan(topo, runs_dir="/tmp/unused", allocate_port=lambda: next(ephemeral),
                        reserve_port=lambda _: None, check_executables=False)  # fmt: skip
    replicas = {replica.name: replica for service in plan.services for replica in service.replicas}
    status = [replicas[name].ports["status"] for name in ("prefill.0", "prefill.1", "decode.0", "decode.1", "decode.2")]
    assert len(set(status)) == 5 and all(16384 <= port < 32768 for port in status), status
    etcd, nats = replicas["etcd"].ports["port"], replicas["nats"].ports["port"]
    env = replicas["decode.1"].env
    assert env["ETCD_ENDPOINTS"] == f"http://127.0.0.1:{etcd}" and env["NATS_SERVER"] == f"nats://127.0.0.1:{nats}"
    assert env["DYN_SYSTEM_PORT"] == str(replicas["decode.1"].ports["status"])
    assert replicas["etcd"].argv[2] == f"{plan.run_dir}/etcd"
    assert replicas["frontend"].ready.check.url == f"{replicas['frontend'].url}/v1/models/m/ready"  # type: ignore[union-attr]


@contextlib.contextmanager
def _held_port_with_a_free_neighbour() -> Iterator[int]:
    """A bound port P whose P + 1 is free, both below the ephemeral range: an ephemeral neighbour may be
    another test's connection (or its TIME_WAIT), which is what made this test fail once in CI."""
    for candidate in random.sample(range(20000, 32000, 2), 200):
        with socket.socket() as held, socket.socket() as neighbour:
            try:
                held.bind(("127.0.0.1", candidate))
                neighbour.bind(("127.0.0.1", candidate + 1))
            except OSError:
                continue
            neighbour.close()
            yield candidate
            return
    raise AssertionError("no free pair of loopback ports in 20000..32000")


def test_low_ports_skip_ports_in_use_and_handed_out() -> None:
    """A port another program holds, or one this plan gave already, is never handed out again."""
    from supervisor._plan.ports import PortAllocator

    with _held_port_with_a_free_neighbour() as held:
        allocator = PortAllocator()
        for _ in range(20):  # whatever the random start, the only free port of the window is the other one
            assert allocator.allocate_in(held, held + 2) == held + 1
            allocator = PortAllocator()
        allocator.reserve(held + 1)
        with pytest.raises(RuntimeError, match="no free loopback port"):
            allocator.allocate_in(held, held + 2)
    allocator = PortAllocator()
    picked = {allocator.allocate_below(32768) for _ in range(50)}
    assert len(picked) == 50 and all(16384 <= p < 32768 for p in picked)


def test_below_out_of_range_is_a_config_error() -> None:
    topo = sv.Topology(name="t", services=[sv.Service(name="s", command=["true"], ports=[sv.PortSpec("p", below=80)])])
    with pytest.raises(sv.ConfigError, match="port p: below: must be 2049 or more, got 80"):
        sv.make_plan(topo, runs_dir="/tmp/unused", check_executables=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"engine": "tgi"}, "var 'engine': unknown engine 'tgi' (one of: vllm, sglang, trtllm, mocker)"),
        ({"discovery": "consul"}, "var 'discovery': unknown backend 'consul' (one of: etcd, file)"),
        ({"decode": 0}, "var 'decode': expected a whole number of at least 1, got 0"),
        ({"prefill": -1}, "var 'prefill': expected a whole number of at least 0, got -1"),
        ({"tp": 0}, "var 'tp': expected a whole number of at least 1, got 0"),
        ({"served_model_name": "/abs"}, "Dynamo cannot serve a name starting with '/'"),
        # replicas is the common var's synonym for decode: both, differing, was decided silently for replicas
        ({"replicas": 3, "decode": 2}, "var 'replicas': replicas=3 is a synonym for decode, which is 2"),
        ({"planner": "auto"}, "var 'planner': unknown mode 'auto' (one of: off, follow)"),
        # measured: Dynamo 1.6.1's Planner does not import where the engines are installed
        ({"planner": "run"}, "run is not supported: Dynamo 1.6.1's Planner (python -m dynamo.planner) fails at import"),
        ({"planner": "follow", "discovery": "file"}, "the Planner's decisions travel through etcd"),
    ],
)
def test_bad_vars_are_config_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(sv.ConfigError, match="preset 'dynamo'") as caught:
        dynamo(model="Qwen/Qwen3-0.6B", **kwargs)  # type: ignore[arg-type]
    assert message in str(caught.value)


def test_yaml_preset_equals_the_builder() -> None:
    """``topologies/dynamo.yaml`` with --set builds exactly what the Python builder builds."""
    loaded = sv.load(ROOT / "topologies" / "dynamo.yaml",
                     overrides={"engine": "mocker", "model": "/m", "decode": "2", "discovery": "file"})  # fmt: skip
    built = dynamo(engine="mocker", model="/m", decode=2, discovery="file")
    assert loaded.services == built.services


def test_yaml_preset_needs_a_model() -> None:
    with pytest.raises(sv.ConfigError, match="var 'model': required"):
        sv.load(ROOT / "topologies" / "dynamo.yaml")


def test_the_package_attribute_stays_the_builder() -> None:
    """Importing the module ``topologies.dynamo`` bound the package attribute to it: ``topologies.dynamo(...)``
    then called a module (TypeError) in every test that ran after."""
    import importlib

    importlib.import_module("topologies.dynamo")
    importlib.import_module("topologies.llamacpp")
    assert topologies.dynamo(engine="mocker", model="/m") == dynamo(engine="mocker", model="/m")
    assert topologies.llamacpp(model="/m.gguf") == topologies.builder("llamacpp")(model="/m.gguf")
    assert topologies.builder("dynamo") is dynamo


def test_workers_get_their_own_gpus_on_a_simulated_node() -> None:
    """2 prefill + 2 decode vLLM workers at tp=2 fill an 8-GPU node, disjoint; one more worker is refused."""
    topo = dynamo(engine="vllm", model="Qwen/Qwen3-0.6B", prefill=2, decode=2, tp=2)
    plan = sv.make_plan(topo, runs_dir="/tmp/unused", check_executables=False, gpus="8x80GB")
    visible = {r.name: r.env.get("CUDA_VISIBLE_DEVICES") for s in plan.services for r in s.replicas}
    assert visible == {"etcd": None, "nats": None, "prefill.0": "0,1", "prefill.1": "2,3", "decode.0": "4,5",
                       "decode.1": "6,7", "frontend": None}  # fmt: skip
    bigger = dynamo(engine="vllm", model="Qwen/Qwen3-0.6B", prefill=3, decode=2, tp=2)
    with pytest.raises(sv.ConfigError, match=r"decode\.1 +REFUSED: wants 2 GPUs"):
        sv.make_plan(bigger, runs_dir="/tmp/unused", check_executables=False, gpus="8x80GB")


def test_vllm_workers_get_their_own_loopback_nixl_side_channel(tmp_path: Path) -> None:
    """Proves each disaggregated dynamo.vllm worker on the host gets its own NIXL port on loopback (all used
    vLLM's default 5600, and dynamo.vllm advertised the routable address); aggregated workers need none."""
    topo = dynamo(engine="vllm", model="Qwen/Qwen3-0.6B", prefill=2, decode=2, discovery="file")
    plan = sv.make_plan(topo, runs_dir=tmp_path, check_executables=False, gpus="8x80GB")
    workers = [replica for name in ("prefill", "decode") for replica in plan.service(name).replicas]
    ports = [replica.env.get("VLLM_NIXL_SIDE_CHANNEL_PORT") for replica in workers]
    assert len(set(ports)) == 4 and all(port == str(r.ports["nixl"]) for port, r in zip(ports, workers, strict=True))
    assert {replica.env["VLLM_NIXL_SIDE_CHANNEL_HOST"] for replica in workers} == {"127.0.0.1"}
    aggregated = dynamo(engine="vllm", model="Qwen/Qwen3-0.6B", prefill=0, decode=2, discovery="file")
    assert "VLLM_NIXL_SIDE_CHANNEL_PORT" not in services(aggregated)["decode"].env


@pytest.mark.parametrize(
    ("engine", "overrides"),
    [("vllm", {"model": "/models/my model"}), ("sglang", {"model": "Qwen/Qwen3-0.6B", "served_model_name": "a,b"})],
)
def test_a_served_name_dynamo_would_split_is_refused(engine: str, overrides: dict[str, str]) -> None:
    """Proves a served name with a space or comma (which dynamo.vllm/sglang split into name + aliases, so the
    frontend's readiness on the whole name never passed) is a ConfigError naming the preset and var."""
    with pytest.raises(sv.ConfigError, match=r"preset 'dynamo', var 'served_model_name'.*splits"):
        dynamo(engine=engine, **overrides)  # type: ignore[arg-type]
    assert dynamo(engine="mocker", model="/models/my model").services[-1].ready is not None  # no split there


def test_disaggregated_trtllm_workers_transfer_kv_cache(tmp_path: Path) -> None:
    """Proves disaggregated dynamo.trtllm workers get a cache transceiver (without one TRT-LLM disables KV
    transfer, so no request could be served) and the prefill worker no overlap scheduler, as JSON."""
    topo = dynamo(engine="trtllm", model="Qwen/Qwen3-0.6B", prefill=1, decode=1, discovery="file")
    plan = sv.make_plan(topo, runs_dir=tmp_path, check_executables=False, gpus="8x80GB")
    sent = {}
    for role in ("prefill", "decode"):
        argv = plan.service(role).replicas[0].argv
        sent[role] = json.loads(argv[argv.index("--override-engine-args") + 1])
        assert sent[role]["cache_transceiver_config"] == {"backend": "DEFAULT"}
    assert sent["prefill"]["disable_overlap_scheduler"] is True and "disable_overlap_scheduler" not in sent["decode"]
    aggregated = services(dynamo(engine="trtllm", model="Qwen/Qwen3-0.6B", prefill=0))["decode"]
    assert "--override-engine-args" not in aggregated.command


def test_disaggregated_sglang_workers_bind_and_advertise_their_host(tmp_path: Path) -> None:
    """Proves disaggregated dynamo.sglang workers bind SGLang's bootstrap server on ``{host}`` and advertise
    that same address. Dynamo 1.6.1 (``dynamo/sglang/_disagg.py``, ``compute_bootstrap_address``) tells
    decode workers the prefill worker is at SGLang's ``get_local_ip_auto()``: ``SGLANG_HOST_IP``, else the
    routable (eth0) address, which SGLang's NIXL transfer also binds; SGLang 0.5.21 (the version Dynamo
    1.6.1 pins) binds the bootstrap server on ``--host``, 127.0.0.1 by default. Unset, decode dialled the
    eth0 address where nobody listened (and on a cluster, a loopback-only server). Dynamo's own
    ``examples/backends/sglang/launch/disagg.sh`` passes ``--host`` to both roles."""
    topo = dynamo(engine="sglang", model="Qwen/Qwen3-0.6B", prefill=1, decode=2, discovery="file")
    plan = sv.make_plan(topo, runs_dir=tmp_path, check_executables=False, gpus="8x80GB")
    workers = [replica for name in ("prefill", "decode") for replica in plan.service(name).replicas]
    assert len(workers) == 3
    for replica in workers:
        assert replica.argv[replica.argv.index("--host") + 1] == "127.0.0.1", replica.argv
        assert replica.env["SGLANG_HOST_IP"] == "127.0.0.1"
    aggregated = services(dynamo(engine="sglang", model="Qwen/Qwen3-0.6B", prefill=0))["decode"]
    assert "--host" not in aggregated.command and "SGLANG_HOST_IP" not in aggregated.env


def test_disaggregated_trtllm_with_dynamic_trtllm_flags_keeps_one_form(tmp_path: Path) -> None:
    """Proves a disaggregated dynamo.trtllm worker given ``--trtllm.<path> value`` flags gets its cache
    transceiver as the same dotted flags: Dynamo 1.6.1 (``dynamo/trtllm/args.py``, ``parse_args``) exits 1
    when ``--override-engine-args`` and ``--trtllm.*`` flags are both given, so the preset's own
    ``--override-engine-args`` made every such worker fail. The user's dotted flags come last (in
    ``dynamo/trtllm/dynamic_flags.py`` a later one wins), so they may still change what the preset sets."""
    user = ["--trtllm.kv_cache_config.free_gpu_memory_fraction", "0.7", "--trtllm.disable_overlap_scheduler", "false"]
    topo = dynamo(engine="trtllm", model="Qwen/Qwen3-0.6B", prefill=1, decode=1, discovery="file", args=user)
    plan = sv.make_plan(topo, runs_dir=tmp_path, check_executables=False, gpus="8x80GB")
    for role in ("prefill", "decode"):
        argv = list(plan.service(role).replicas[0].argv)
        assert "--override-engine-args" not in argv, argv
        dotted = argv[argv.index("--disaggregation-mode") + 2 :]
        assert dotted[dotted.index("--trtllm.cache_transceiver_config.backend") + 1] == "DEFAULT"
        assert dotted[-4:] == user
    prefill = list(plan.service("prefill").replicas[0].argv)
    assert prefill[prefill.index("--trtllm.disable_overlap_scheduler") + 1] == "true"  # the user's false comes later
    plain = dynamo(engine="trtllm", model="Qwen/Qwen3-0.6B", args={"max_batch_size": 8})
    assert "--override-engine-args" in services(plain)["prefill"].command  # without dotted flags: the JSON form


def test_a_nul_byte_after_a_tilde_is_a_config_error_not_a_crash(tmp_path: Path) -> None:
    """Proves ``model='~\\x00'`` (found by the presets fuzz test) or such an ``env_path`` gives the plan's
    ConfigError naming the NUL byte, instead of a ValueError from ``os.path.expanduser`` in the builder."""
    for kwargs in ({"model": "~\x00"}, {"model": "/m", "env_path": "~\x00"}):
        topo = dynamo(engine="mocker", discovery="file", **kwargs)  # type: ignore[arg-type]
        with pytest.raises(sv.ConfigError, match="NUL byte"):
            sv.make_plan(topo, runs_dir=tmp_path, check_executables=False)


def test_replicas_is_decode_when_decode_is_left_or_agrees() -> None:
    for kwargs in ({"replicas": 3}, {"replicas": 3, "decode": 3}):
        topo = dynamo(model="m", engine="mocker", **kwargs)  # type: ignore[arg-type]
        assert next(s.replicas for s in topo.services if s.name == "decode") == 3


@pytest.mark.parametrize(("engine", "grace"), [("vllm", 30), ("sglang", 60), ("trtllm", 60), ("mocker", 10)])
def test_workers_get_the_grace_dynamo_s_own_shutdown_takes(engine: str, grace: float) -> None:
    """Dynamo 1.6.1's sglang/trtllm workers sleep 5 s after unregistering, then drain KV transfers for up to
    30 s (common/utils/graceful_shutdown.py): they get 60 s before SIGKILL, not 30."""
    topo = topologies.dynamo(engine=engine, model="m", prefill=1, decode=1)  # type: ignore[arg-type]
    workers = [s for s in topo.services if s.name in ("prefill", "decode")]
    assert len(workers) == 2 and all(w.stop == sv.StopPolicy("SIGTERM", grace_seconds=grace) for w in workers)


@pytest.mark.parametrize("prefill", [0, 1])
def test_each_worker_role_takes_its_own_env_over_the_common_one(prefill: int) -> None:
    """``decode_env`` goes to the decode workers, or to the aggregated ones (named decode) with prefill=0."""
    services = {
        s.name: s
        for s in topologies.dynamo(
            model="m", prefill=prefill, env={"A": "1", "B": "all"}, prefill_env={"B": "p"}, decode_env={"C": "d"}
        ).services
    }
    decode = services["decode"].env
    assert (decode["A"], decode["B"], decode["C"]) == ("1", "all", "d")
    if prefill:
        assert (services["prefill"].env["A"], services["prefill"].env["B"]) == ("1", "p")
        assert "C" not in services["prefill"].env
    assert services["frontend"].env["B"] == "all" and "C" not in services["frontend"].env
