"""``supervisor graph``: the dependency graph as text, Mermaid and DOT, golden-tested on the demo topology
and the Dynamo preset (planned on a simulated 8-GPU node), and through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

import supervisor as sv
from supervisor._cli.main import main
from supervisor._plan.graph import layers, render_dot, render_graph, render_mermaid, render_text

ROOT = Path(__file__).parents[2]


def plan_of(path: str, **overrides: str) -> sv.Plan:
    topology = sv.load(ROOT / path, overrides=overrides)
    return sv.make_plan(topology, gpus="8x80GB", check_executables=False)


DEMO_TEXT = """\
demo: 4 services, 6 replicas
  layer 0  kv
  layer 1  prefill x2  after kv (ready)
           decode x2   after kv (ready)
  layer 2  frontend    after kv (ready), prefill (ready), decode (ready)"""

DEMO_MERMAID = """\
flowchart TD
    kv["kv"]
    prefill["prefill x2"]
    decode["decode x2"]
    frontend["frontend"]
    kv -->|ready| prefill
    kv -->|ready| decode
    kv -->|ready| frontend
    prefill -->|ready| frontend
    decode -->|ready| frontend"""

DEMO_DOT = """\
digraph "demo" {
    rankdir=LR;
    node [shape=box];
    "kv" [label="kv"];
    "prefill" [label="prefill x2"];
    "decode" [label="decode x2"];
    "frontend" [label="frontend"];
    "kv" -> "prefill" [label="ready"];
    "kv" -> "decode" [label="ready"];
    "kv" -> "frontend" [label="ready"];
    "prefill" -> "frontend" [label="ready"];
    "decode" -> "frontend" [label="ready"];
}"""


def test_the_demo_topology_in_every_format() -> None:
    plan = plan_of("examples/demo.yaml")
    assert render_text(plan) == DEMO_TEXT
    assert render_mermaid(plan) == DEMO_MERMAID
    assert render_dot(plan) == DEMO_DOT


DYNAMO_TEXT = """\
dynamo-vllm: 5 services, 6 replicas
  layer 0  etcd
           nats
  layer 1  prefill x2 (gpus 0,1; 2,3)  after etcd (ready), nats (ready)
           decode (gpus 4,5)           after etcd (ready), nats (ready)
           frontend                    after etcd (ready), nats (ready)"""

DYNAMO_MERMAID = """\
flowchart TD
    etcd["etcd"]
    nats["nats"]
    prefill["prefill x2 (gpus 0,1; 2,3)"]
    decode["decode (gpus 4,5)"]
    frontend["frontend"]
    etcd -->|ready| prefill
    nats -->|ready| prefill
    etcd -->|ready| decode
    nats -->|ready| decode
    etcd -->|ready| frontend
    nats -->|ready| frontend"""


def test_the_dynamo_preset_with_replicas_and_gpus_per_replica() -> None:
    plan = plan_of("topologies/dynamo.yaml", model="x", prefill="2", tp="2")
    assert render_text(plan) == DYNAMO_TEXT
    assert render_mermaid(plan) == DYNAMO_MERMAID
    assert '    "prefill" [label="prefill x2 (gpus 0,1; 2,3)"];' in render_dot(plan).splitlines()


def test_conditions_keywords_and_odd_names_render_safely() -> None:
    """``started`` edges are dashed; a service called ``end`` (a Mermaid keyword) or with a ``-`` in its
    name gets a safe Mermaid id; layers follow the longest chain."""
    topology = sv.Topology(
        name="odd-graph",
        services=[
            sv.Service(name="end", command=["true"]),
            sv.Service(name="my-job", command=["true"], depends_on=[sv.Dependency("end", "started")]),
            sv.Service(name="web", command=["true"], depends_on={"my-job": "completed", "end": "ready"}, replicas=0),
        ],
    )
    plan = sv.make_plan(topology, check_executables=False)
    assert [[s.name for s in layer] for layer in layers(plan)] == [["end"], ["my-job"], ["web"]]
    mermaid = render_mermaid(plan).splitlines()
    assert '    end_["end"]' in mermaid and '    my_job["my-job"]' in mermaid
    assert "    end_ -.->|started| my_job" in mermaid and "    my_job -->|completed| web" in mermaid
    dot = render_dot(plan).splitlines()
    assert dot[0] == 'digraph "odd-graph" {'
    assert '    "end" -> "my-job" [label="started", style=dashed];' in dot
    assert '    "web" [label="web x0"];' in dot
    assert render_text(plan).splitlines()[-1] == "  layer 2  web x0  after my-job (completed), end (ready)"
    with pytest.raises(ValueError, match="unknown graph format 'svg'"):
        render_graph(plan, "svg")


def test_the_cli_prints_the_graph_and_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", str(ROOT / "examples/demo.yaml"), "--format", "mermaid"]) == 0
    assert capsys.readouterr().out == DEMO_MERMAID + "\n"
    args = ["graph", str(ROOT / "topologies/dynamo.yaml"), "--set", "model=x", "--set", "prefill=2", "--set", "tp=2"]
    assert main([*args, "--gpus", "8x80GB"]) == 0
    assert capsys.readouterr().out == DYNAMO_TEXT + "\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nservices:\n  a: {command: [true], depends_on: [b]}\n")
    assert main(["graph", str(bad)]) == 2
    assert "unknown service 'b'" in capsys.readouterr().err
