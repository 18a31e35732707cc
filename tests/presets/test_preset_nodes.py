"""Presets on the nodes of an allocation: servers listen on their node's address, clients reach them there,
and on one machine every command, env value and probe is what it was before (a recorded golden file)."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import attrs
import pytest

import supervisor as sv
import topologies
from supervisor._cli.main import main
from supervisor._spec.cluster import placement_notes
from supervisor._spec.placement import ClusterNode
from tests.preset_cases import CASES, ON_CLUSTER, build, plan_of, snapshot

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "presets_one_machine.json"


@pytest.mark.parametrize("label", sorted(CASES))
def test_on_one_machine_the_plan_is_the_recorded_one(label: str) -> None:
    """Proves templating the addresses ({host}, {svc.host}) changed nothing a single-machine replica runs
    with: argv, env, probes, metrics and URLs equal those recorded before the change, byte for byte."""
    recorded = json.loads(GOLDEN.read_text())[label]
    assert snapshot(plan_of(build(label))) == recorded


ADDRESSES = tuple(f"10.0.0.{i}" for i in range(1, 5))
NODES = tuple(ClusterNode(f"n{i}", address) for i, address in enumerate(ADDRESSES))
_ADDRESS = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(?::(\d+))?")


def on_four_nodes(label: str, **extra: object) -> sv.Plan:
    return plan_of(attrs.evolve(build(label, **extra), cluster=sv.SlurmCluster(nodes=4)), nodes=NODES)


def texts(replica: sv.ReplicaPlan) -> list[str]:
    """Everything of a replica that may hold an address: each task's argv, env values, probes, metrics."""
    found = [arg for argv in (replica.placement.argvs if replica.placement else (replica.argv,)) for arg in argv]
    found += list(replica.env.values())
    for probe in (replica.ready, replica.alive):
        if probe is not None:
            found.append(repr(probe))
    return found + ([replica.metrics] if replica.metrics else [])


@pytest.mark.parametrize("label", ON_CLUSTER)
def test_on_four_nodes_every_address_is_a_nodes_and_every_port_is_served_there(label: str) -> None:
    """Proves no placed replica keeps a loopback address (a server would listen where no other node
    reaches it, a client would call itself), every address:port it names is a port some replica of the
    plan has on that very node, and every bare address (a listen address, an advertised one) is its own."""
    plan = on_four_nodes(label)
    served = {(r.host, port) for s in plan.services for r in s.replicas for port in r.ports.values()}
    pairs = 0
    for service in plan.services:
        for replica in service.replicas:
            if service.name == "config":  # trtllm's file writer runs beside the supervisor, in its run dir
                assert replica.placement is None
            else:
                assert replica.placement is not None and replica.host in ADDRESSES, replica.name
            for text in texts(replica):
                assert "127.0.0.1" not in text and "localhost" not in text, (replica.name, text)
                for address, port in _ADDRESS.findall(text):
                    assert address in ADDRESSES, (replica.name, text)
                    if port:
                        assert (address, int(port)) in served, (replica.name, text)
                        pairs += 1
                    elif service.name != "config":  # trtllm's writes the frontend's listen address
                        assert address == replica.host, (replica.name, text)
    assert pairs >= len(served), pairs  # every replica is probed or called at least once by address


@pytest.mark.parametrize("label", ON_CLUSTER)
def test_on_four_nodes_probes_go_to_the_replicas_own_node(label: str) -> None:
    """Proves readiness and liveness probes (run by the supervisor) reach the replica where it runs."""
    plan = on_four_nodes(label)
    for service in plan.services:
        for replica in service.replicas:
            for probe in (replica.ready, replica.alive):
                for url in re.findall(r"http://([\d.]+):(\d+)", repr(probe)):
                    assert url == (replica.host, str(url[1])) and int(url[1]) in replica.ports.values(), url


def _one(plan: sv.Plan, name: str) -> sv.ReplicaPlan:
    return next(r for s in plan.services for r in s.replicas if r.name == name)


def test_dynamo_workers_and_frontend_find_etcd_and_nats_on_their_node() -> None:
    plan = on_four_nodes("dynamo-vllm")
    etcd, nats = _one(plan, "etcd"), _one(plan, "nats")
    for service in ("prefill", "decode", "frontend"):
        for replica in plan.service(service).replicas:
            assert replica.env["ETCD_ENDPOINTS"] == f"http://{etcd.host}:{etcd.ports['port']}"
            assert replica.env["NATS_SERVER"] == f"nats://{nats.host}:{nats.ports['port']}"
            for key in ("DYN_TCP_RPC_HOST", "DYN_EVENT_PLANE_HOST", "DYN_TCP_RESPONSE_STREAM_HOST"):
                assert replica.env[key] == replica.host  # what it advertises: reachable from the other nodes
    for replica in plan.service("prefill").replicas:
        assert replica.env["VLLM_NIXL_SIDE_CHANNEL_HOST"] == replica.host


def test_proxy_and_router_call_each_server_on_its_node() -> None:
    for label, flag in (("vllm-disagg", "--prefill"), ("sglang-disagg", "--prefill")):
        plan = on_four_nodes(label)
        argv = _one(plan, "frontend").argv
        for role in ("prefill", "decode"):
            urls = [argv[i + 1] for i, arg in enumerate(argv) if arg == f"--{role}"]
            assert urls == [r.url for r in plan.service(role).replicas], (label, argv)
            assert len({r.host for r in plan.service(role).replicas}) > 1  # spread: the test can tell nodes apart
        assert flag in argv


def test_trtllm_disagg_config_names_each_server_on_its_node() -> None:
    plan = on_four_nodes("trtllm-disagg")
    config = _one(plan, "config").argv
    disagg = json.loads(config[config.index(next(a for a in config if a.endswith("disagg.yaml"))) + 1])
    frontend = _one(plan, "frontend")
    assert (disagg["hostname"], disagg["port"]) == (frontend.host, frontend.port)
    for role, key in (("prefill", "context_servers"), ("decode", "generation_servers")):
        expected = [f"{r.host}:{r.port}" for r in plan.service(role).replicas]
        assert disagg[key]["urls"] == expected


#: the services every other one calls: on node 0 of an allocation, the head node
HEAD = {"etcd", "nats"}
ROUTED = {"vllm-disagg", "vllm-disagg-lmcache", "sglang-disagg", "trtllm-disagg"}  #: a proxy/router in front


@pytest.mark.parametrize("label", ON_CLUSTER)
def test_on_four_nodes_the_control_plane_is_on_node_0_and_the_engines_spread(label: str) -> None:
    """Proves etcd, NATS and the frontend (Dynamo's, a proxy or a router) are pinned to node 0, and the
    engine servers go round-robin over the allocation (none left on the supervisor's machine)."""
    plan = on_four_nodes(label)
    engines: list[str] = []
    for service in plan.services:
        for replica in service.replicas:
            head = service.name in HEAD or (service.name == "frontend" and (label in ROUTED or "dynamo" in label))
            if head:
                assert replica.placement is not None and replica.placement.nodes == (NODES[0],), replica.name
            elif service.name != "config":
                engines.append(replica.host)
    assert len(set(engines)) == min(len(engines), len(NODES)), engines  # round-robin: distinct while they last


def test_validate_nodes_4_shows_the_dynamo_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``supervisor validate topologies/dynamo.yaml --nodes 4`` (no cluster needed): the head node holds
    etcd, NATS and the frontend; the four workers take one node each."""
    args = ["validate", str(ROOT / "topologies" / "dynamo.yaml"), "--nodes", "4", "--runs-dir", str(tmp_path)]
    args += ["--set", "model=/models/tok", "--set", "engine=mocker", "--set", "prefill=2", "--set", "decode=2"]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    layout = {line.split()[0]: line.split()[1:] for line in lines[lines.index("placement on 4 Slurm nodes:") + 1 :]}
    assert layout == {
        "node0": ["etcd,", "nats,", "prefill.0,", "frontend"],
        "node1": ["prefill.1"],
        "node2": ["decode.0"],
        "node3": ["decode.1"],
    }


@pytest.mark.parametrize("label", sorted(CASES))
def test_on_one_machine_the_pins_are_no_news(label: str) -> None:
    """Proves a preset's node-0 pins (and trtllm's local config job) add no 'placement ignored' note on
    one machine: node 0 and local hold there as they are. A user's pin elsewhere is still noted."""
    topology = build(label)
    pinned = label in ROUTED or "dynamo" in label or label == "trtllm-config"
    assert any(service.placement is not None for service in topology.services) == pinned
    assert placement_notes(topology) == []
    elsewhere = attrs.evolve(topology.services[0], placement=sv.Placement(node=1))
    assert placement_notes(attrs.evolve(topology, services=[elsewhere])) != []


def test_validate_on_one_machine_prints_no_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["validate", str(ROOT / "topologies" / "dynamo.yaml"), "--runs-dir", str(tmp_path)]
    assert main([*args, "--set", "model=/models/tok", "--set", "engine=mocker"]) == 0
    assert "note:" not in capsys.readouterr().out


def test_a_builder_takes_a_cluster_and_a_preset_file_its_cluster_field() -> None:
    """``cluster=`` in Python, ``cluster:`` in the file: the same topology; ``vars: {cluster: ...}`` is no var."""
    built = topologies.dynamo(model="m", cluster=sv.SlurmCluster(nodes=4, time="1h"))
    assert built.cluster == sv.Cluster(sv.SlurmCluster(nodes=4, time="1:00:00"))
    loaded = sv.load("dynamo", overrides={"model": "m", "cluster.slurm.nodes": "4", "cluster.slurm.time": "1h"})
    assert loaded == built
    for builder in (topologies.vllm, topologies.sglang, topologies.trtllm, topologies.llamacpp):
        assert builder(model="m", cluster=sv.SlurmCluster(nodes=2)).cluster == sv.Cluster(sv.SlurmCluster(nodes=2))
        assert builder(model="m").cluster is None


def test_cluster_is_not_a_var_of_a_preset(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("preset: dynamo\nvars: {model: m, cluster: {slurm: {nodes: 2}}}\n")
    with pytest.raises(sv.ConfigError) as caught:
        sv.load(path)
    assert "preset 'dynamo' takes no var 'cluster'" in str(caught.value)


def test_sglang_server_over_two_nodes_is_one_replica_with_a_task_per_node() -> None:
    """Proves ``nodes_per_replica=2``: each server is one replica on two nodes of its own, each task with
    its rank, the leader's address for --dist-init-addr, its own --host, and tp split into GPUs per node."""
    topology = topologies.sglang(model="m", tp=16, replicas=2, nodes_per_replica=2)
    plan = plan_of(attrs.evolve(topology, cluster=sv.SlurmCluster(nodes=4)), nodes=NODES)
    replicas = plan.service("frontend").replicas
    assert [[n.address for n in r.placement.nodes] for r in replicas if r.placement] == [
        ["10.0.0.1", "10.0.0.2"],
        ["10.0.0.3", "10.0.0.4"],
    ]
    for replica in replicas:
        assert replica.placement is not None and replica.placement.gpus_per_node == 8
        leader = replica.placement.nodes[0].address
        assert replica.url == f"http://{leader}:{replica.port}"  # clients and probes: rank 0 serves HTTP
        for rank, argv in enumerate(replica.placement.argvs):
            after = dict(itertools.pairwise(argv))
            assert after["--dist-init-addr"] == f"{leader}:{replica.ports['dist']}"
            assert (after["--nnodes"], after["--node-rank"]) == ("2", str(rank))
            assert after["--host"] == replica.placement.nodes[rank].address
            assert after["--tp-size"] == "16"


def test_sglang_disagg_servers_over_two_nodes_each_behind_the_router_on_node_0() -> None:
    topology = topologies.sglang(model="m", mode="disagg", tp=8, nodes_per_replica=2)
    plan = plan_of(attrs.evolve(topology, cluster=sv.SlurmCluster(nodes=4)), nodes=NODES)
    prefill, decode, router = (_one(plan, name) for name in ("prefill", "decode", "frontend"))
    assert prefill.placement is not None and decode.placement is not None and router.placement is not None
    assert {n.name for n in prefill.placement.nodes}.isdisjoint(n.name for n in decode.placement.nodes)
    assert router.placement.nodes == (NODES[0],)
    assert ("--prefill", prefill.url, str(prefill.ports["bootstrap"])) == router.argv[4:7]
    assert prefill.placement.gpus_per_node == decode.placement.gpus_per_node == 4


def test_sglang_nodes_per_replica_checks() -> None:
    with pytest.raises(sv.ConfigError, match="var 'nodes_per_replica': tp x dp = 3 GPUs do not split evenly over 2"):
        topologies.sglang(model="m", tp=3, nodes_per_replica=2)
    with pytest.raises(sv.ConfigError, match="var 'nodes_per_replica': expected a whole number of at least 1"):
        topologies.sglang(model="m", nodes_per_replica=0)
    loaded = sv.load(ROOT / "topologies" / "sglang.yaml", overrides={"nodes_per_replica": "2", "tp": "2"})
    assert loaded == topologies.sglang(model="Qwen/Qwen3-0.6B", nodes_per_replica=2, tp=2)
    assert placement_notes(loaded) == [
        "placement of 'frontend' ignored: no cluster: in the file, so everything runs on this machine "
        "(--slurm or --set cluster.slurm.nodes=N runs it on Slurm)"
    ]
