"""Presets on the nodes of an allocation: servers listen on their node's address, clients reach them there,
and on one machine every command, env value and probe is what it was before (a recorded golden file)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import attrs
import pytest

import supervisor as sv
from supervisor._placement import ClusterNode
from tests.preset_cases import CASES, build, plan_of, snapshot

GOLDEN = Path(__file__).parent / "golden" / "presets_one_machine.json"


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


@pytest.mark.parametrize("label", sorted(CASES))
def test_on_four_nodes_every_address_is_a_nodes_and_every_port_is_served_there(label: str) -> None:
    """Proves no placed replica keeps a loopback address (a server would listen where no other node
    reaches it, a client would call itself), every address:port it names is a port some replica of the
    plan has on that very node, and every bare address (a listen address, an advertised one) is its own."""
    plan = on_four_nodes(label)
    served = {(r.host, port) for s in plan.services for r in s.replicas for port in r.ports.values()}
    pairs = 0
    for service in plan.services:
        for replica in service.replicas:
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


@pytest.mark.parametrize("label", sorted(CASES))
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
