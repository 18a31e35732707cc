"""Golden tests of the SGLang preset: command lines, env, ports, probes, phases and stop policy.

Checked against SGLang's docs and source (2026-11): docs/advanced_features/server_arguments.md
(``--model-path --host --port --served-model-name --tp-size --dp-size``), docs/advanced_features/
pd_disaggregation.md (``--disaggregation-mode prefill|decode``, ``--disaggregation-transfer-backend``,
``--disaggregation-bootstrap-port``), docs/advanced_features/router.md (``python -m
sglang_router.launch_router --pd-disaggregation --prefill URL BOOTSTRAP_PORT --decode URL``, ``/readiness``,
``/liveness``), srt/entrypoints/http_server.py ("The server is fired up and ready to roll!" after the
warm-up request; ``/health_generate``) and srt/model_executor/model_runner.py ("Load weight begin",
"Load weight end", "Capture cuda graph begin").
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import supervisor as sv
import topologies
from tests.preset_checks import bad_var_names_preset_and_var, twin_matches_builder, validate_exits_0


def launch(model: str = "m", tp: int = 1) -> list[str]:
    return ["{python}", "-m", "sglang.launch_server", "--model-path", model, "--host", "{host}", "--port", "{port}",
            "--served-model-name", model, "--tp-size", str(tp), "--enable-metrics"]  # fmt: skip


def test_single_server_is_ready_once_warmed_up() -> None:
    topology = topologies.sglang(model="m")
    (server,) = topology.services
    assert topology.name == "sglang" and server.name == "frontend"
    assert server.metrics == "http://{host}:{port}/metrics"  # with --enable-metrics (off by default)
    assert list(server.command) == launch()
    assert server.ports == (sv.PortSpec("port"),) and server.gpus == sv.GpuRequest(count=1)
    assert server.stop == sv.StopPolicy("SIGTERM", 30.0)
    assert server.ready is not None and server.ready.timeout_seconds == 1800.0
    assert server.ready.check == sv.AnyOf(
        [
            sv.LogCheck("The server is fired up and ready to roll!"),
            sv.HttpCheck("http://{host}:{port}/health_generate", 200),
        ]
    )  # not /health, nor uvicorn's "Application startup complete.": both come before the warm-up
    assert [p.name for p in server.phases] == ["dist_init", "load_weights", "kv_cache", "cuda_graphs", "warmup"]


def test_sglang_log_lines_start_their_phases() -> None:
    lines = [
        "[2026-02-01 00:05:01 TP0] Init torch distributed begin.",
        "[2026-02-01 00:05:02 TP0] Load weight begin. avail mem=15.24 GB",
        "[2026-02-01 00:05:03 TP0] Load weight end. elapsed=1.25 s, type=GraniteMoeHybridForCausalLM, dtype=torch.bfloat16",
        "[2026-02-01 00:05:03 TP0] Capture cuda graph begin. This can take up to several minutes. avail mem=2.98 GB",
        "INFO:     Uvicorn running on http://127.0.0.1:30000 (Press CTRL+C to quit)",
    ]
    phases = topologies.sglang(model="m").services[0].phases
    for phase, line in zip(phases, lines, strict=True):
        assert [p.name for p in phases if re.search(p.pattern, line)] == [phase.name]


def test_tp_dp_env_and_args(tmp_path: Path) -> None:
    (server,) = topologies.sglang(
        model="m", tp=2, dp=2, env_path=str(tmp_path), args={"mem_fraction_static": 0.8}
    ).services
    assert list(server.command) == [
        str(tmp_path / "bin" / "python"),
        *launch(tp=2)[1:],
        "--dp-size",
        "2",
        "--mem-fraction-static",
        "0.8",
    ]
    assert server.gpus == sv.GpuRequest(count=4) and server.env["VIRTUAL_ENV"] == str(tmp_path)


@pytest.mark.parametrize(
    ("args", "role", "gpus"),
    [({"enable_dp_attention": True}, "args", 4), (["--enable-dp-attention"], "decode_args", 4), ({}, "args", 8)],
)
def test_dp_attention_shares_the_tp_gpus(args: object, role: str, gpus: int) -> None:
    """``--dp-size 2`` alone is two copies of a ``--tp-size 4`` group (8 GPUs); with ``--enable-dp-attention`` the
    dp ranks split the tp group's 4 GPUs (SGLang server_args.py: "Enabling data parallelism for attention and
    tensor parallelism for FFN", ``tp_size % dp_size == 0``; data_parallel_controller.py launches
    dp-attention schedulers on tp_size GPUs), so the preset must not reserve tp x dp."""
    topology = topologies.sglang(model="m", tp=4, dp=2, mode="disagg", **{role: args})  # type: ignore[arg-type]
    decode = topology.services[1]
    assert decode.gpus == sv.GpuRequest(count=gpus)
    with pytest.raises(sv.ConfigError, match="var 'dp': --enable-dp-attention splits tp=4 GPUs into dp groups"):
        topologies.sglang(model="m", tp=4, dp=3, args=["--enable-dp-attention"])


def test_prefill_decode_with_bootstrap_ports_behind_the_router() -> None:
    topology = topologies.sglang(model="m", mode="disagg", prefill=2, decode=2, transfer_backend="nixl")
    prefill, decode, frontend = topology.services
    assert topology.name == "sglang-disagg"
    assert list(prefill.command) == [*launch(), "--disaggregation-mode", "prefill", "--disaggregation-bootstrap-port",
                                     "{bootstrap}", "--disaggregation-transfer-backend", "nixl"]  # fmt: skip
    assert list(decode.command) == [
        *launch(),
        "--disaggregation-mode",
        "decode",
        "--disaggregation-transfer-backend",
        "nixl",
    ]
    assert prefill.ports == (sv.PortSpec("port"), sv.PortSpec("bootstrap")) and decode.ports == (sv.PortSpec("port"),)
    assert list(frontend.command) == [
        "{python}", "-m", "sglang_router.launch_router", "--pd-disaggregation",
        "--prefill", "{prefill.0.url}", "{prefill.0.bootstrap}", "--prefill", "{prefill.1.url}", "{prefill.1.bootstrap}",
        "--decode", "{decode.0.url}", "--decode", "{decode.1.url}", "--host", "{host}", "--port", "{port}",
        "--prometheus-port", "{prometheus}", "--prometheus-host", "{host}",
    ]  # fmt: skip
    # sgl-router binds its Prometheus exporter on 29000 unless told (sgl-router/py_src/sglang_router/router_args.py
    # ``--prometheus-port`` default 29000) and panics when it is taken (src/metrics.rs ``.expect("failed to install
    # Prometheus metrics exporter")``, sglang main 2025-10): the preset gives each router a port of its own
    assert frontend.ports == (sv.PortSpec("port"), sv.PortSpec("prometheus"))
    assert frontend.metrics == "http://{host}:{prometheus}/metrics"  # snapshots and `supervisor status` read it
    assert frontend.ready is not None and frontend.ready.check == sv.HttpCheck("http://{host}:{port}/readiness", 200)
    assert frontend.depends_on == (sv.Dependency("prefill"), sv.Dependency("decode"))
    assert frontend.stop == sv.StopPolicy("SIGTERM", 5.0) and frontend.gpus is None


def test_each_prefill_replica_gets_its_own_bootstrap_port(tmp_path: Path) -> None:
    plan = sv.make_plan(
        topologies.sglang(model="m", mode="disagg", prefill=3),
        runs_dir=tmp_path,
        check_executables=False,
        gpus="8x80GB",
    )
    replicas = plan.service("prefill").replicas
    ports = {r.ports["bootstrap"] for r in replicas}
    assert len(ports) == 3
    assert [r.argv[r.argv.index("--disaggregation-bootstrap-port") + 1] for r in replicas] == [
        str(r.ports["bootstrap"]) for r in replicas
    ]
    router = plan.service("frontend").replicas[0].argv
    assert router[router.index("--prefill") + 2] == str(replicas[0].ports["bootstrap"])


@pytest.mark.parametrize(
    "overrides",
    [
        {"model": "m"},
        {"model": "m", "tp": 4, "replicas": 2},
        {"model": "m", "mode": "disagg", "prefill": 2, "decode_args": ["--x"]},
    ],
)
def test_yaml_twin_builds_the_same_topology(overrides: dict[str, object]) -> None:
    twin_matches_builder("sglang", overrides)


@pytest.mark.parametrize("sets", [(), ("mode=disagg", "decode=2")])
def test_validate_cli_accepts_the_preset(tmp_path: Path, sets: tuple[str, ...]) -> None:
    validate_exits_0("sglang", tmp_path, *sets)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"prefill": 0}, "preset 'sglang', var 'prefill': expected a whole number of at least 1, got 0"),
        ({"mode": "pd"}, "preset 'sglang', var 'mode': expected one of single, disagg, got 'pd'"),
        ({"port": 30000, "replicas": 3}, "preset 'sglang', var 'port': a fixed port needs replicas=1"),
        ({"mode": "disagg", "replicas": 2}, "preset 'sglang', var 'replicas':"),
        ({"transfer": "nixl"}, "preset 'sglang' takes no var 'transfer' (did you mean 'transfer_backend'?)"),
    ],
)
def test_bad_vars_name_the_preset_and_the_var(overrides: dict[str, object], expected: str) -> None:
    bad_var_names_preset_and_var("sglang", overrides, expected)


@pytest.mark.parametrize(
    "overrides",
    [{"tp": 2, "dp": 2, "nodes_per_replica": 2}, {"mode": "disagg", "prefill": 2, "transfer_backend": "nixl"}],
)
def test_the_stand_ins_take_every_flag_the_preset_passes(tmp_path: Path, overrides: dict[str, object]) -> None:
    """Proves the stand-ins accept the multi-node flags (``--dist-init-addr --nnodes --node-rank``, real in
    SGLang's server_args.py; the stand-in refused them with exit 2) and the router's flags, resolved as run."""
    from standins.sglang import _router_parser, _server_parser

    plan = sv.make_plan(
        topologies.sglang(model="m", **overrides),  # type: ignore[arg-type]
        runs_dir=tmp_path,
        check_executables=False,
        gpus="8x80GB",
    )
    for service in plan.services:
        for replica in service.replicas:
            argv = list(replica.argv)
            module = argv[argv.index("-m") + 1]
            parser = _router_parser() if module == "sglang_router.launch_router" else _server_parser()
            parser.parse_args(argv[argv.index("-m") + 2 :])


def test_a_multi_node_server_on_one_machine_gets_every_node_s_gpus(tmp_path: Path) -> None:
    """Proves ``nodes_per_replica=2`` without a cluster (ignored: one process with ``--nnodes 1``) gets all
    ``--tp-size`` GPUs here; it got one node's share, so ``--tp-size 4`` ran on 2 GPUs and SGLang failed."""
    plan = sv.make_plan(
        topologies.sglang(model="m", tp=4, nodes_per_replica=2), runs_dir=tmp_path, check_executables=False,
        gpus="8x80GB",
    )  # fmt: skip
    (server,) = plan.service("frontend").replicas
    assert server.argv[server.argv.index("--nnodes") + 1] == "1" and "4" in server.argv
    assert len(server.gpus) == 4 and server.env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"


@pytest.mark.parametrize(
    ("overrides", "advertised"),
    [
        ({}, False),
        ({"mode": "disagg"}, True),
        ({"nodes_per_replica": 2, "tp": 2}, True),
    ],
)
def test_disaggregated_and_multi_node_servers_advertise_their_host(
    overrides: dict[str, object], advertised: bool
) -> None:
    """SGLang advertises its auto-detected routable address (eth0) to KV-transfer peers, the bootstrap
    handshake and the multi-node rendezvous unless ``SGLANG_HOST_IP`` is set (srt/utils ``get_ip``, sglang
    main 2025-11; Dynamo 1.6.1's sglang workers hit the same). Such a server is told ``{host}``, the address
    it listens on; a user's ``env`` still wins. A single server advertises nothing to anybody: unchanged."""
    topology = topologies.sglang(model="m", **overrides)  # type: ignore[arg-type]
    servers = [service for service in topology.services if "sglang.launch_server" in service.command]
    assert servers
    for server in servers:
        assert (server.env.get("SGLANG_HOST_IP") == "{host}") is advertised, server.env
    mine = topologies.sglang(model="m", mode="disagg", env={"SGLANG_HOST_IP": "10.0.0.7"})
    assert all(s.env["SGLANG_HOST_IP"] == "10.0.0.7" for s in mine.services if "sglang.launch_server" in s.command)


def test_each_disaggregated_role_takes_its_own_env_over_the_common_one() -> None:
    prefill, decode, frontend = topologies.sglang(
        model="m", mode="disagg", env={"A": "1", "B": "all"}, prefill_env={"B": "p"}, decode_env={"C": "d"}
    ).services
    assert (prefill.env["A"], prefill.env["B"], "C" in prefill.env) == ("1", "p", False)
    assert (decode.env["A"], decode.env["B"], decode.env["C"]) == ("1", "all", "d")
    assert frontend.env == {"A": "1", "B": "all"}
