"""``cluster: {slurm: ...}`` and ``placement:`` from YAML and code: shapes, Slurm times, overrides, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

import supervisor as sv
from supervisor._cli.main import main
from supervisor._spec.cluster import nodes_needed, with_slurm
from supervisor._spec.load import topology_from_text
from supervisor._spec.model import Cluster, Placement, SlurmCluster
from supervisor._units import slurm_time

SERVICES = """
services:
  etcd: {command: [sleep, "1"], placement: {node: 0}}
  prefill: {command: [sleep, "1"], replicas: 2, gpus: 8}
  decode: {command: [sleep, "1"], placement: {nodes: 2}}
  bench: {command: [sleep, "1"], placement: local}
"""
NO_CLUSTER = "name: c\n" + SERVICES
CLUSTER = (
    """
name: c
cluster:
  slurm: {nodes: 4, partition: gpu, account: lab, time: 2h, qos: high, constraint: "a100&ib", extra: [--exclusive]}
"""
    + SERVICES
)


def plan_problems(text: str, **overrides: str) -> list[str]:
    with pytest.raises(sv.ConfigError) as caught:
        topology = topology_from_text(text, source="t.yaml", overrides=overrides)
        sv.make_plan(topology, runs_dir="/tmp/topovisor-test-runs", check_executables=False)
    assert caught.value.source == "t.yaml"
    return caught.value.problems


def one_service(cluster: str, service: str) -> str:
    return f"name: t\n{cluster}\nservices:\n  a: {{command: [sleep, '1'], {service}}}\n"


@pytest.mark.parametrize(
    ("given", "slurm"),
    [
        ("2h", "2:00:00"),
        ("90m", "1:30:00"),
        ("45s", "0:00:45"),
        ("1.2s", "0:00:02"),  # rounded up: a limit is never shortened
        ("36h", "1-12:00:00"),
        ("2:00:00", "2:00:00"),
        ("30:00", "30:00"),
        ("1-12", "1-12"),
        ("3-00:30:00", "3-00:30:00"),
        ("UNLIMITED", "UNLIMITED"),
    ],
)
def test_time_limits_become_slurm_format(given: str, slurm: str) -> None:
    assert slurm_time(given) == slurm
    assert SlurmCluster(time=given).time == slurm  # the same in code


@pytest.mark.parametrize(
    ("given", "words"),
    [(30, "ambiguous"), ("30", "ambiguous"), ("soon", "time limit"), ("0s", "more than 0"), (True, "time limit")],
)
def test_bad_time_limits_are_refused(given: object, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        slurm_time(given)


def test_yaml_and_code_build_the_same_cluster() -> None:
    topology = topology_from_text(CLUSTER)
    assert topology.cluster == Cluster(
        SlurmCluster(
            nodes=4, partition="gpu", account="lab", time="2h", qos="high", constraint="a100&ib", extra=["--exclusive"]
        )
    )
    assert topology.cluster.slurm is not None and topology.cluster.slurm.time == "2:00:00"
    placements = {s.name: s.placement for s in topology.services}
    assert placements == {
        "etcd": Placement(node=0),
        "prefill": None,
        "decode": Placement(nodes=2),
        "bench": Placement(local=True),
    }
    assert sv.Service(name="b", command=["x"], placement="local").placement == Placement(local=True)  # type: ignore[arg-type]
    assert sv.Topology(name="t", services=[], cluster=SlurmCluster(nodes=2)).cluster == Cluster(SlurmCluster(nodes=2))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "cluster", ["cluster: slurm", "cluster: {slurm: }", "cluster: {slurm: {}}"], ids=["word", "null", "empty"]
)
def test_short_forms_take_the_defaults(cluster: str) -> None:
    topology = topology_from_text(one_service(cluster, "replicas: 1"))
    assert topology.cluster == Cluster(SlurmCluster())


def test_extra_as_one_string_is_split_like_a_shell() -> None:
    topology = topology_from_text(
        one_service("cluster: {slurm: {extra: \"--exclusive --comment 'a b'\"}}", "replicas: 1")
    )
    assert topology.cluster is not None and topology.cluster.slurm is not None
    assert topology.cluster.slurm.extra == ("--exclusive", "--comment", "a b")


@pytest.mark.parametrize(
    "base", ["", "cluster: slurm", "cluster: {slurm: {nodes: 2, partition: gpu}}"], ids=["none", "word", "block"]
)
def test_set_cluster_fields_works_with_or_without_a_cluster_block(base: str) -> None:
    """``--set cluster.slurm.nodes=8`` is an override like any other, even where the file has no cluster."""
    topology = topology_from_text(
        one_service(base, "replicas: 1"), overrides={"cluster.slurm.nodes": "8", "cluster.slurm.time": "90m"}
    )
    assert topology.cluster is not None and topology.cluster.slurm is not None
    assert (topology.cluster.slurm.nodes, topology.cluster.slurm.time) == (8, "1:30:00")
    assert topology.cluster.slurm.partition == ("gpu" if "partition" in base else None)


def test_a_misspelt_cluster_override_is_an_error_with_a_suggestion() -> None:
    problems = plan_problems(one_service("", "replicas: 1"), **{"cluster.slurm.nodez": "8"})
    assert problems == ["field 'cluster.slurm': unknown field 'nodez' (did you mean 'nodes'?)"]


def test_cluster_fields_take_vars() -> None:
    text = one_service("vars: {nodes: 2}\ncluster: {slurm: {nodes: '${nodes}', time: '${limit:-1h}'}}", "replicas: 1")
    slurm = topology_from_text(text, overrides={"nodes": "6"}).cluster.slurm  # type: ignore[union-attr]
    assert slurm is not None and (slurm.nodes, slurm.time) == (6, "1:00:00")


@pytest.mark.parametrize(
    ("cluster", "service", "expected"),
    [
        ("cluster: {slurm: {nodes: four}}", "", "field 'cluster.slurm.nodes': expected a whole number, got 'four'"),
        ("cluster: {slurm: {nodes: 0}}", "", "field 'cluster.slurm.nodes': must be from 1 to 100000, got 0"),
        ("cluster: {slurm: {nodez: 4}}", "", "field 'cluster.slurm': unknown field 'nodez' (did you mean 'nodes'?)"),
        ("cluster: {slurm: {time: 30}}", "", "field 'cluster.slurm.time': 30 is ambiguous (Slurm reads a bare number as minutes"),
        ("cluster: {slurm: {time: soon}}", "", "field 'cluster.slurm.time': expected a time limit such as 2h"),
        ("cluster: {slurm: {partition: 'a b'}}", "", "field 'cluster.slurm.partition': expected one word"),
        ("cluster: {slurm: {account: [a]}}", "", "field 'cluster.slurm.account': expected a string, got ['a']"),
        ("cluster: {slurm: {extra: [--nodes=3]}}", "", "field 'cluster.slurm.extra': '--nodes=3' is set by topovisor (from cluster.slurm.nodes)"),
        ("cluster: {slurm: {extra: {a: 1}}}", "", "field 'cluster.slurm.extra': expected a list of salloc arguments"),
        ("cluster: {pbs: {}}", "", "field 'cluster': unknown field 'pbs' (known: slurm)"),
        ("cluster: {}", "", "field 'cluster': needs slurm:"),
        ("cluster: 3", "", "field 'cluster': expected {slurm: {nodes: N"),
        ("cluster: slurm", "placement: {node: x}", "service 'a', field 'placement.node': expected a whole number, got 'x'"),
        ("cluster: slurm", "placement: {nod: 1}", "service 'a', field 'placement': unknown field 'nod' (did you mean 'node'?)"),
        ("cluster: slurm", "placement: remote", "service 'a', field 'placement': expected local, {node: i} or {nodes: n}, got 'remote'"),
        ("cluster: slurm", "placement: {node: -1}", "service 'a', field 'placement.node': must be 0 or more, got -1"),
        ("cluster: slurm", "placement: {nodes: 0}", "service 'a', field 'placement.nodes': must be 1 or more, got 0"),
        ("cluster: slurm", "placement: {local: true, node: 1}", "service 'a', field 'placement': local runs on this machine; it takes no node"),
        ("cluster: {slurm: {nodes: 4}}", "placement: {node: 4}", "service 'a', field 'placement.node': node 4 is beyond the allocation's 4 nodes (0..3); raise cluster.slurm.nodes"),
        ("cluster: {slurm: {nodes: 4}}", "placement: {node: 3, nodes: 2}", "service 'a', field 'placement.node': nodes 3..4 are beyond the allocation's 4 nodes"),
        ("cluster: {slurm: {nodes: 4}}", "placement: {nodes: 5}", "service 'a', field 'placement.nodes': a replica on 5 nodes needs 5, the allocation has 4"),
        ("cluster: {slurm: {nodes: 4}}", "replicas: 3, placement: {nodes: 2}", "service 'a', field 'placement.nodes': 3 replicas of 2 nodes each need 6 nodes"),
        ("cluster: slurm", "gpus: {ids: [0, 1]}", "service 'a', field 'gpus.ids': on a cluster Slurm picks the GPUs (--gpus-per-node)"),
        ("cluster: slurm", "gpus: {count: 1, min_free_memory: 10GB}", "service 'a', field 'gpus.min_free_memory': not checked on a cluster"),
    ],
)  # fmt: skip
def test_every_bad_value_names_the_file_the_service_and_the_field(cluster: str, service: str, expected: str) -> None:
    problems = plan_problems(one_service(cluster, service or "replicas: 1"))
    assert any(expected in problem for problem in problems), problems


def test_the_same_mistakes_in_code_read_the_same() -> None:
    service = sv.Service(name="a", command=["sleep", "1"], placement=Placement(node=4))
    with pytest.raises(sv.ConfigError) as caught:
        sv.make_plan(
            sv.Topology(name="t", services=[service], cluster=SlurmCluster(nodes=4, time="soon")), runs_dir="/tmp/x"
        )  # type: ignore[arg-type]
    assert caught.value.problems == [
        "field 'cluster.slurm.time': expected a time limit such as 2h, 90m or Slurm's 2:00:00 / 1-12:00:00, got 'soon'",
        "service 'a', field 'placement.node': node 4 is beyond the allocation's 4 nodes (0..3); "
        "raise cluster.slurm.nodes (or --set cluster.slurm.nodes=N)",
    ]


def test_gpu_ids_and_pins_are_fine_without_a_cluster() -> None:
    """Without ``cluster:`` a placement is ignored (the same file runs here), so pins are not checked."""
    text = one_service("", "placement: {node: 7, nodes: 3}")
    assert topology_from_text(text).services[0].placement == Placement(node=7, nodes=3)
    sv.make_plan(topology_from_text(text), runs_dir="/tmp/topovisor-test-runs", check_executables=False)


def test_slurm_switch_adds_a_cluster_sized_for_the_placements() -> None:
    topology = topology_from_text(NO_CLUSTER)
    assert topology.cluster is None
    assert nodes_needed(topology) == 2  # decode: {nodes: 2}; etcd on node 0
    assert with_slurm(topology).cluster == Cluster(SlurmCluster(nodes=2))
    assert with_slurm(topology, nodes=6).cluster == Cluster(SlurmCluster(nodes=6))
    pinned = topology_from_text(one_service("", "replicas: 2, placement: {node: 3, nodes: 2}"))
    assert nodes_needed(pinned) == 5
    spread = topology_from_text(one_service("", "replicas: 3, placement: {nodes: 2}"))
    assert nodes_needed(spread) == 6


def test_slurm_switch_keeps_the_files_cluster() -> None:
    topology = topology_from_text(CLUSTER)
    assert with_slurm(topology) is topology
    assert with_slurm(topology, nodes=8).cluster.slurm.partition == "gpu"  # type: ignore[union-attr]
    assert with_slurm(topology, nodes=8).cluster.slurm.nodes == 8  # type: ignore[union-attr]


def test_validate_notes_a_placement_ignored_without_a_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(one_service("", "placement: {node: 1}"))
    assert main(["validate", str(path), "--runs-dir", str(tmp_path / "runs")]) == 0
    assert "note: placement of 'a' ignored: no cluster: in the file" in capsys.readouterr().out
    assert main(["validate", str(path), "--slurm", "--runs-dir", str(tmp_path / "runs")]) == 0
    assert "ignored" not in capsys.readouterr().out


def test_validate_slurm_switch_checks_the_placements(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--slurm`` with ``--set cluster.slurm.nodes=1``: a pin on node 1 is now an error, exit 2."""
    path = tmp_path / "t.yaml"
    path.write_text(one_service("", "placement: {node: 1}"))
    args = ["validate", str(path), "--slurm", "--set", "cluster.slurm.nodes=1", "--runs-dir", str(tmp_path / "runs")]
    assert main(args) == 2
    assert "service 'a', field 'placement.node': node 1 is beyond the allocation's 1 nodes" in capsys.readouterr().err


def test_a_preset_file_takes_a_cluster_and_cluster_overrides(tmp_path: Path) -> None:
    """``preset:`` files are topologies too: ``cluster:`` and ``--set cluster.*`` work there, the builder
    never sees them."""
    path = tmp_path / "p.yaml"
    path.write_text("preset: dynamo\nvars: {model: m}\ncluster: {slurm: {nodes: 3, time: 1h}}\n")
    assert sv.load(path).cluster == Cluster(SlurmCluster(nodes=3, time="1:00:00"))
    assert sv.load(path, overrides={"cluster.slurm.nodes": "8"}).cluster == Cluster(SlurmCluster(nodes=8, time="1h"))
    bundled = sv.load("dynamo", overrides={"model": "m", "cluster.slurm.partition": "gpu"})
    assert bundled.cluster == Cluster(SlurmCluster(partition="gpu"))
    assert sv.load("dynamo", overrides={"model": "m"}).cluster is None


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"cluster.slurm.nodez": "8"}, "field 'cluster.slurm': unknown field 'nodez' (did you mean 'nodes'?)"),
        ({"cluster.slurm.time": "30"}, "field 'cluster.slurm.time': 30 is ambiguous"),
        ({"cluster": "3"}, "field 'cluster': expected {slurm: {nodes: N"),
    ],
)
def test_a_presets_cluster_errors_read_as_in_any_file(tmp_path: Path, overrides: dict[str, str], expected: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("preset: dynamo\nvars: {model: m}\n")
    with pytest.raises(sv.ConfigError) as caught:
        sv.load(path, overrides=overrides)
    assert len(caught.value.problems) == 1 and expected in caught.value.problems[0]
    assert caught.value.source == str(path)
