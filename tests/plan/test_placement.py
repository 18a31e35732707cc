"""Placement planning, without a cluster: which replica on which node, templates per task, ports, GPUs."""

from __future__ import annotations

import itertools
import re
import socket
from collections.abc import Sequence
from pathlib import Path

import pytest

import supervisor as sv
from supervisor._cli.main import main
from supervisor._plan.placement import REMOTE_PORTS, PortBook, _Addressed, placeholder_nodes
from supervisor._plan.ports import PortAllocator
from supervisor._spec.load import topology_from_text
from supervisor._spec.model import PortSpec
from supervisor._spec.placement import ClusterNode

RUNS = "/tmp/topovisor-test-runs"
EMULATED = tuple(ClusterNode(f"n{i}", "127.0.0.1") for i in range(1, 5))  #: as on the test cluster
REAL = tuple(ClusterNode(f"gpu{i}", f"10.9.0.{i}") for i in range(1, 5))  #: other machines: not checkable

DESIGN = """
name: design
cluster: {slurm: {nodes: 4}}
services:
  etcd: {command: [sleep, "{host}"], ports: [port], placement: {node: 0}}
  prefill: {command: [sleep, "{host}", "{etcd.url}"], ports: [port], replicas: 2, gpus: 8, depends_on: [etcd]}
  decode:
    command: [sleep, "--rank={node_rank}", "--nnodes={nnodes}", "--host={host}", "--leader={leader_host}"]
    ports: [port]
    placement: {nodes: 2}
    gpus: 4
    depends_on: [etcd]
  bench:
    command: [sleep, "{host}", "{prefill.urls}", "{decode.url}", "{decode.host}", "{node_rank}/{nnodes}"]
    placement: local
    depends_on: [prefill, decode]
"""


def plan(text: str, nodes: Sequence[ClusterNode] | None, **kwargs: object) -> sv.Plan:
    return sv.make_plan(topology_from_text(text), runs_dir=RUNS, nodes=nodes, check_executables=False, **kwargs)  # type: ignore[arg-type]


def on(plan_: sv.Plan) -> dict[str, list[str] | None]:
    """Replica name -> its node names (None: this machine)."""
    return {
        r.name: None if r.placement is None else [n.name for n in r.placement.nodes]
        for s in plan_.services
        for r in s.replicas
    }


def every_port(plan_: sv.Plan) -> list[tuple[str, int]]:
    """(address, port) of every port of every task: what must never repeat."""
    found = []
    for service in plan_.services:
        for replica in service.replicas:
            addresses = [n.address for n in replica.placement.nodes] if replica.placement else [replica.host]
            found.extend((address, port) for address in addresses for port in replica.ports.values())
    return found


def test_the_design_example_lands_on_its_nodes() -> None:
    """Pins pin, defaults go round-robin in start order, a two-node replica takes the next two nodes."""
    result = plan(DESIGN, placeholder_nodes(4))
    assert on(result) == {
        "etcd": ["node0"],
        "prefill.0": ["node0"],  # a pin does not move the cursor
        "prefill.1": ["node1"],
        "decode": ["node2", "node3"],
        "bench": None,
    }
    assert result.nodes == placeholder_nodes(4)


def test_round_robin_wraps_and_continues_across_services() -> None:
    text = """
name: rr
cluster: {slurm: {nodes: 3}}
services:
  a: {command: [sleep, "1"], replicas: 4}
  b: {command: [sleep, "1"], replicas: 2}
"""
    assert on(plan(text, placeholder_nodes(3))) == {
        "a.0": ["node0"], "a.1": ["node1"], "a.2": ["node2"], "a.3": ["node0"], "b.0": ["node1"], "b.1": ["node2"],
    }  # fmt: skip


def test_planning_is_deterministic() -> None:
    first, second = plan(DESIGN, EMULATED), plan(DESIGN, EMULATED)
    assert on(first) == on(second)


def test_multi_node_replicas_get_disjoint_runs_of_consecutive_nodes() -> None:
    """A service's replicas take one run of nodes from the cursor, or from node 0 if they do not fit."""
    text = """
name: mn
cluster: {slurm: {nodes: 6}}
services:
  head: {command: [sleep, "1"]}
  wide: {command: [sleep, "{node_rank}"], replicas: 2, placement: {nodes: 3}}
  pinned: {command: [sleep, "1"], replicas: 2, placement: {node: 4, nodes: 2}}
"""
    assert on(plan(text, placeholder_nodes(6))) == {
        "head": ["node0"],
        "wide.0": ["node0", "node1", "node2"],  # 1 + 6 > 6 nodes: the run starts again at node 0
        "wide.1": ["node3", "node4", "node5"],
        "pinned.0": ["node4", "node5"],
        "pinned.1": ["node4", "node5"],
    }


def test_each_task_gets_its_rank_its_host_and_the_leader() -> None:
    decode = plan(DESIGN, REAL).service("decode").replicas[0]
    assert decode.placement is not None
    assert decode.placement.argvs == (
        ("sleep", "--rank=0", "--nnodes=2", "--host=10.9.0.3", "--leader=10.9.0.3"),
        ("sleep", "--rank=1", "--nnodes=2", "--host=10.9.0.4", "--leader=10.9.0.3"),
    )
    assert decode.argv == decode.placement.argvs[0]
    assert decode.host == "10.9.0.3"


def test_host_templates_and_urls_use_the_nodes_address() -> None:
    result = plan(DESIGN, REAL)
    etcd, prefill, decode = (result.service(n).replicas for n in ("etcd", "prefill", "decode"))
    assert etcd[0].argv == ("sleep", "10.9.0.1")
    assert prefill[1].argv == ("sleep", "10.9.0.2", f"http://10.9.0.1:{etcd[0].port}")
    assert prefill[1].url == f"http://10.9.0.2:{prefill[1].port}"
    (bench,) = result.service("bench").replicas
    urls = f"http://10.9.0.1:{prefill[0].port},http://10.9.0.2:{prefill[1].port}"
    assert bench.argv == ("sleep", "127.0.0.1", urls, f"http://10.9.0.3:{decode[0].port}", "10.9.0.3", "0/1")
    assert bench.host == "127.0.0.1" and bench.placement is None
    assert result.client_env()["TOPOVISOR_DECODE_URL"] == f"http://10.9.0.3:{decode[0].port}"


def test_a_tcp_probe_by_port_alone_goes_to_the_replicas_node() -> None:
    text = """
name: p
cluster: slurm
services:
  a: {command: [sleep, "1"], ports: [port], ready: {any: [{tcp: "{port}"}, {http: "http://{host}:{port}/health"}]}}
"""
    (replica,) = plan(text, REAL[:1]).service("a").replicas
    assert replica.ready is not None
    tcp, http = replica.ready.check.checks  # type: ignore[attr-defined]
    assert tcp == sv.TcpCheck(f"10.9.0.1:{replica.port}")
    assert http.url == f"http://10.9.0.1:{replica.port}/health"


def test_the_same_file_runs_here_without_nodes_or_without_a_cluster() -> None:
    """No allocation given (or no cluster): every replica runs on this machine; {node_rank} etc. still work."""
    for text, nodes in ((DESIGN, None), (DESIGN.replace("cluster: {slurm: {nodes: 4}}", ""), EMULATED)):
        result = sv.make_plan(
            topology_from_text(text), runs_dir=RUNS, check_executables=False, gpus="24x80GB", nodes=nodes
        )
        assert set(on(result).values()) == {None}
        assert result.nodes == ()
        (decode,) = result.service("decode").replicas
        assert decode.argv == ("sleep", "--rank=0", "--nnodes=1", "--host=127.0.0.1", "--leader=127.0.0.1")
        assert decode.gpus  # planned on this machine's GPUs as before


def test_gpus_become_gpus_per_node_and_no_local_gpus_are_assigned() -> None:
    """With an allocation, Slurm sets CUDA_VISIBLE_DEVICES: no NVML is opened (there is none here)."""
    result = plan(DESIGN, EMULATED)
    per_node = {r.name: r.placement.gpus_per_node for s in result.services for r in s.replicas if r.placement}
    assert per_node == {"etcd": 0, "prefill.0": 8, "prefill.1": 8, "decode": 4}
    for service in result.services:
        for replica in service.replicas:
            assert replica.gpus == ()
            assert "CUDA_VISIBLE_DEVICES" not in replica.env


def test_a_local_service_still_gets_gpus_of_this_machine() -> None:
    text = DESIGN.replace("placement: local", "placement: local\n    gpus: 2")
    result = plan(text, EMULATED, gpus="4x80GB")
    (bench,) = result.service("bench").replicas
    assert bench.gpus == (0, 1) and bench.env["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_an_allocation_smaller_than_the_file_says_is_reported_by_node_name() -> None:
    """Inside an existing allocation the nodes are the allocation's, whatever cluster.slurm.nodes says."""
    with pytest.raises(sv.ConfigError) as caught:
        plan(DESIGN.replace("{node: 0}", "{node: 3}"), EMULATED[:1])
    assert caught.value.problems == [
        "service 'etcd', field 'placement.node': node 3 is beyond the allocation's 1 nodes (n1)",
        "service 'decode', field 'placement.nodes': a replica on 2 nodes needs 2, the allocation has 1 (n1)",
    ]
    with pytest.raises(
        sv.ConfigError, match=r"3 replicas of 2 nodes each need 6 nodes, the allocation has 4 \(n1, n2, n3, n4\)"
    ):
        plan(
            DESIGN.replace("{nodes: 4}", "{nodes: 6}").replace(
                "placement: {nodes: 2}", "placement: {nodes: 2}\n    replicas: 3"
            ),
            EMULATED,
        )


ALL_PORTS = """
name: ports
cluster: {slurm: {nodes: 4}}
services:
  here: {command: [sleep, "1"], ports: [a, b], replicas: 3, placement: local}
  spread: {command: [sleep, "1"], ports: [a, b], replicas: 9}
  wide: {command: [sleep, "1"], ports: [a], replicas: 2, placement: {nodes: 2}}
  fixed: {command: [sleep, "1"], ports: {api: 18123}, placement: {node: 1}}
  low: {command: [sleep, "1"], ports: {p: {below: 30000}}, replicas: 4}
"""


def test_ports_never_collide_on_emulated_nodes_sharing_this_host() -> None:
    """Every node is 127.0.0.1: all ports of all tasks, local ones included, are distinct."""
    counter = itertools.count(41000)
    result = plan(ALL_PORTS, EMULATED, allocate_port=lambda: next(counter), reserve_port=lambda port: None)
    ports = [port for _, port in every_port(result)]
    wide = [port for r in result.service("wide").replicas for port in r.ports.values()]
    assert len(set(ports)) == len(ports) - len(wide)  # a two-node replica's port is on both of its tasks
    assert all(
        41000 <= p < 42000 for r in result.service("spread").replicas for p in r.ports.values()
    )  # the one allocator


def test_ports_never_collide_on_distinct_nodes() -> None:
    """Other machines: a port is unique per address; a multi-node replica's port is free on all its nodes."""
    for _ in range(20):  # ports there are random: repeat to give a collision its chance
        result = plan(ALL_PORTS, REAL)
        pairs = every_port(result)
        assert len(set(pairs)) == len(pairs)
        for replica in result.service("spread").replicas:
            assert all(REMOTE_PORTS[0] <= p < REMOTE_PORTS[1] for p in replica.ports.values())
        for replica in result.service("low").replicas:
            assert all(15000 <= p < 30000 for p in replica.ports.values())


def test_only_this_machines_addresses_are_checked_for_free_ports() -> None:
    """127.0.0.2 is this machine (all of 127/8 is loopback): a port bound there is never handed out."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.2", 0))
        taken = busy.getsockname()[1]
        own, other = _Addressed("127.0.0.2", []), _Addressed("10.9.0.1", [])
        assert own.checked and not other.checked
        assert not own.is_free(taken)
        assert other.is_free(taken)  # another machine: only what we handed out counts


def test_a_fixed_port_is_never_handed_out_on_any_node() -> None:
    book = PortBook(PortAllocator().allocate, lambda port: None, PortAllocator(), [25000])
    for _ in range(200):
        assert book.pick(PortSpec("p", below=25002), ["10.9.0.1"]) != 25000
        assert book.pick(PortSpec("p"), ["10.9.0.2", "10.9.0.3"]) != 25000


def test_validate_nodes_shows_the_placement_plan_without_a_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``validate FILE --nodes 4`` on a file with no cluster: which replica on which node, ports, GPUs per node."""
    path = tmp_path / "t.yaml"
    path.write_text(DESIGN.replace("cluster: {slurm: {nodes: 4}}", ""))
    assert main(["validate", str(path), "--nodes", "4", "--commands", "--runs-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert re.search(r"^  etcd +after: - +ports: port=\d+  on: node0$", out, re.M), out
    assert re.search(r"^  prefill\.1 +after: etcd \(ready\) +ports: port=\d+  on: node1  gpus/node: 8$", out, re.M)
    assert re.search(
        r"^  decode +after: etcd \(ready\) +ports: port=\d+  on: node2,node3 \(2 tasks\)  gpus/node: 4$", out, re.M
    )
    assert re.search(r"^  bench +after: .*on: this machine$", out, re.M)
    assert "    # rank 1 on node3" in lines
    assert "    sleep --rank=1 --nnodes=2 --host=node3 --leader=node2" in lines
    at = lines.index("placement on 4 Slurm nodes:")
    assert lines[at + 1 :] == [
        "  node0         etcd, prefill.0  [8 GPUs]",
        "  node1         prefill.1  [8 GPUs]",
        "  node2         decode (rank 0)  [4 GPUs]",
        "  node3         decode (rank 1)  [4 GPUs]",
        "  this machine  bench",
    ]


def test_validate_of_a_file_with_a_cluster_shows_its_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(DESIGN.replace("{slurm: {nodes: 4}}", "{slurm: {nodes: 4, partition: gpu, time: 90m}}"))
    assert main(["validate", str(path), "--runs-dir", str(tmp_path / "runs")]) == 0
    assert "placement on 4 Slurm nodes (partition gpu, time 1:30:00):" in capsys.readouterr().out
    assert main(["validate", str(path), "--nodes", "2", "--runs-dir", str(tmp_path / "runs")]) == 0  # --nodes wins
    assert "placement on 2 Slurm nodes" in capsys.readouterr().out


def test_validate_nodes_reports_a_pin_beyond_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(DESIGN)
    assert main(["validate", str(path), "--nodes", "1", "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "service 'decode', field 'placement.nodes': a replica on 2 nodes needs 2, the allocation has 1" in err


def test_validate_without_a_cluster_shows_no_placement(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(DESIGN.replace("cluster: {slurm: {nodes: 4}}", ""))
    assert main(["validate", str(path), "--gpus", "24x80GB", "--runs-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "Slurm nodes" not in out and "on: node" not in out
    assert "gpus: 0,1,2,3,4,5,6,7" in out  # planned on this machine's (simulated) GPUs, as before
