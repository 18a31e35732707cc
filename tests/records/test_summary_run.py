"""The run summary of real runs: the critical chain of a 3-level chain whose delays the test controls
with files, ``summary.json`` and ``group.summary()``, and what ``supervisor run`` prints at the end."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import supervisor as sv

from ..helpers import PROGRAMS, PYTHON

ROOT = Path(__file__).parents[2]

#: waits (bounded) until the file argv[1] exists, then says it is up and stays up
WAIT_FOR_FILE = (
    "import os, sys, time\n"
    "deadline = time.monotonic() + 60\n"
    "while not os.path.exists(sys.argv[1]):\n"
    "    if time.monotonic() > deadline: sys.exit(9)\n"
    "    time.sleep(0.005)\n"
    "print('up', flush=True)\n"
    "time.sleep(600)\n"
)


def waits_for(name: str, gates: Path, **fields: object) -> sv.Service:
    return sv.Service(
        name=name, command=[PYTHON, "-c", WAIT_FOR_FILE, str(gates / name)], ready=sv.LogCheck("up"), **fields
    )


@pytest.mark.anyio
async def test_the_critical_chain_of_a_real_run_names_the_gating_services_in_order(
    tmp_path: Path, runs_dir: Path
) -> None:
    """root -> mid (2 replicas) -> leaf, with side beside mid: leaf waits for mid and side, and the test
    lets mid get ready only after side was, so mid gated leaf. The chain is root, mid, leaf; side is not
    on it. The same summary comes from ``group.summary()`` while running and from ``summary.json``."""
    gates = tmp_path / "gates"
    gates.mkdir()
    topo = sv.Topology(
        name="chain",
        services=[
            waits_for("root", gates),
            waits_for("mid", gates, replicas=2, depends_on=["root"]),
            sv.Service(name="side", command=[PYTHON, "-c", WAIT_FOR_FILE, str(tmp_path)], ready=sv.LogCheck("up"),
                       depends_on=["root"]),
            waits_for("leaf", gates, depends_on=["mid", "side"]),
        ],
    )  # fmt: skip
    seen: set[tuple[str, str]] = set()

    def open_gates(event: sv.Event) -> None:
        seen.add((event.kind, event.service))
        if ("spawned", "root") in seen:
            (gates / "root").touch()
        if {("ready", "side"), ("spawned", "mid")} <= seen:
            (gates / "mid").touch()
        if ("spawned", "leaf") in seen:
            (gates / "leaf").touch()

    async with sv.launch(topo, runs_dir=runs_dir, on_event=open_gates) as group:
        live = group.summary()
    assert live.outcome == "running" and live.teardown_seconds is None and live.ended_wall_time is None
    chain = [(link.service, link.gated_by, link.condition) for link in live.critical_chain]
    assert chain == [("root", None, None), ("mid", "root", "ready"), ("leaf", "mid", "ready")]
    assert live.critical_chain[1].replica in ("mid.0", "mid.1")
    for earlier, later in zip(live.critical_chain, live.critical_chain[1:], strict=False):
        assert earlier.ready_at_seconds is not None and later.started_at_seconds is not None
        assert earlier.ready_at_seconds <= later.started_at_seconds
    assert live.services["side"].ready_at_seconds < live.services["mid"].ready_at_seconds  # type: ignore[operator]

    final = sv.read_summary(group.run_dir)
    assert final.outcome == "stopped" and final.verified_no_leftovers
    assert final.critical_chain == live.critical_chain
    assert final.ready_seconds is not None and final.teardown_seconds is not None
    assert final.ready_seconds >= final.critical_chain[-1].ready_at_seconds  # type: ignore[operator]
    assert all(s.stop_seconds is not None for s in final.services.values())
    assert all(r.state == "stopped" and r.restarts == 0 and len(r.exits) == 1 for r in final.replicas.values())
    assert list(final.replicas) == ["root", "mid.0", "mid.1", "side", "leaf"]


def test_read_summary_of_a_run_without_one_says_why(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no summary"):
        sv.read_summary(tmp_path)


# flaky -> a -> b: each waits for the one before it to be ready, so the chain is the same on a busy host
# (with flaky beside the chain, whichever of flaky and b was ready last ended the critical chain)
CHAIN_YAML = """
name: chain
services:
  a:
    command: ["{python}", -c, "print('up', flush=True); import time; time.sleep(60)"]
    ready: {log: up}
    depends_on: [flaky]
  b:
    command: ["{python}", -c, "print('up', flush=True); import time; time.sleep(60)"]
    ready: {log: up}
    depends_on: [a]
  flaky:
    shell: "if [ -e {run_dir}/once ]; then echo up; exec sleep 60; else touch {run_dir}/once; exit 3; fi"
    ready: {log: up}
    restart: {policy: on-failure, backoff: {initial: 10ms}}
"""


def test_supervisor_run_prints_the_table_and_the_chain_and_quiet_only_the_problems(
    tmp_path: Path, runs_dir: Path
) -> None:
    path = tmp_path / "chain.yaml"
    path.write_text(CHAIN_YAML)

    def run(*flags: str) -> str:
        result = subprocess.run(
            [PYTHON, "-m", "supervisor", "run", str(path), "--runs-dir", str(runs_dir), *flags, "--", "true"],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stderr

    lines = run().splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("summary (run stopped): all ready in "))
    assert lines[head + 1].split() == ["replica", "state", "ready", "restarts", "exit", "teardown"]
    rows = {line.split()[0]: line.split() for line in lines[head + 2 : head + 5]}
    assert rows["flaky"][3] == "1" and rows["flaky"][4] == "3!,SIGTERM" and rows["a"][3] == "0"
    chain_at = lines.index("critical chain:")
    assert [line.split()[0] for line in lines[chain_at + 1 : chain_at + 4]] == ["flaky", "a", "b"]
    assert lines[chain_at + 2].endswith("after flaky ready") and lines[chain_at + 3].endswith("after a ready")

    quiet_lines = run("-q").splitlines()
    problems = [line for line in quiet_lines if "[supervisor]" in line]  # -q's event lines: the restart
    assert any("flaky: exited (3)" in line for line in problems), quiet_lines
    quiet = [line for line in quiet_lines if "[supervisor]" not in line]
    assert quiet[0].endswith("1 of 3 replicas had problems"), quiet
    assert [line.split()[0] for line in quiet[1:]] == ["replica", "flaky"]


@pytest.mark.anyio
async def test_the_summary_keeps_each_startup_phase_of_a_real_replica(runs_dir: Path) -> None:
    """Phases printed by a real child land in the summary in order, the skipped one absent, each finished,
    and they account for no more than the replica's time to ready."""
    service = sv.Service(
        name="llm",
        command=[PYTHON, str(PROGRAMS / "phased.py"), "say:Loading weights", "say:Application startup complete",
                 "say:READY", "hold"],
        ready=sv.LogCheck("^READY$"),
        phases={"weights": "Loading weights", "graphs": "Capturing CUDA graph", "api": "Application startup complete"},
    )  # fmt: skip
    async with sv.launch(sv.Topology(name="phased", services=[service]), runs_dir=runs_dir) as group:
        pass
    replica = sv.read_summary(group.run_dir).replicas["llm"]
    assert [(p.name, p.finished) for p in replica.phases] == [("weights", True), ("api", True)]
    assert replica.ready_seconds is not None
    assert sum(p.seconds for p in replica.phases) <= replica.ready_seconds + 1e-6
