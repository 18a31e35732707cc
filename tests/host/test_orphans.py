"""Nothing survives: the supervisor SIGKILLed, detached runs stopped from another process, gc of
leftovers whose supervisor and watchdog both died, stale servers on fixed ports, and a chaos test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from supervisor import read_summary
from supervisor._host.proctable import marked_processes

from ..helpers import PROGRAMS, PYTHON, alive, supervisor_cli, wait_until

ROOT = Path(__file__).parents[2]


supervisor = supervisor_cli


def hard_topology(tmp_path: Path, *, restart: str = "no", grace: str = "300ms") -> Path:
    """A tree that ignores SIGTERM, with children in and out of its group, a double-forked daemon, and
    a dependent web server; pids land in tmp_path/pids."""
    path = tmp_path / "hard.yaml"
    path.write_text(
        "name: hard\nservices:\n  tree:\n"
        f"    command: ['{{python}}', '{PROGRAMS / 'tree.py'}', --pids, '{tmp_path / 'pids'}', --ignore-term,"
        " --children, '1', --setsid-children, '2', --daemon]\n"
        f"    ready: {{log: tree ready}}\n    stop: {{grace: {grace}}}\n    restart: {{policy: {restart}, backoff: {{initial: 50ms}}}}\n"
        "  web:\n    command: ['{python}', -m, http.server, --bind, 127.0.0.1, '{port}']\n    ports: [port]\n"
        f"    depends_on: [tree]\n    ready: {{http: 'http://127.0.0.1:{{port}}/'}}\n    restart: {{policy: {restart}, backoff: {{initial: 50ms}}}}\n"
    )
    return path


def start_detached(path: Path, runs_dir: Path) -> tuple[str, Path]:
    result = supervisor("run", "--detach", str(path), "--runs-dir", str(runs_dir))
    assert result.returncode == 0, result.stderr
    run_id = result.stdout.strip()
    return run_id, runs_dir / run_id


def run_pids(run_dir: Path) -> dict[str, int]:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return {
        "supervisor": manifest["supervisor_pid"],
        **{r["name"]: r["pid"] for s in manifest["services"].values() for r in s["replicas"]},
    }


def watchdog_pid(state: Path, run_id: str) -> int:
    return int(json.loads((state / "topovisor" / "index" / f"{run_id}.json").read_text())["watchdog_pid"])


def test_detached_run_is_listed_and_stopped_from_another_process(tmp_path: Path, runs_dir: Path) -> None:
    run_id, run_dir = start_detached(hard_topology(tmp_path), runs_dir)
    pids = run_pids(run_dir)
    assert alive(pids["supervisor"]) and alive(pids["web"])
    listed = json.loads(supervisor("ps", "--json").stdout)
    assert run_id in [run["run_id"] for run in listed]
    result = supervisor("stop", run_id)
    assert result.returncode == 0, result.stderr
    assert not alive(pids["supervisor"]) and marked_processes(run_id) == {}
    grandchildren = [int(p) for p in (tmp_path / "pids").read_text().split()]
    assert not [p for p in grandchildren if alive(p)]
    assert run_id not in supervisor("ps").stdout
    summary = read_summary(run_dir)  # a detached run keeps its summary too
    assert summary.verified_no_leftovers and [link.service for link in summary.critical_chain] == ["tree", "web"]
    assert summary.replicas["tree"].killed and summary.services["tree"].stop_seconds is not None


def test_sigkilled_supervisor_leaves_nothing_behind(tmp_path: Path, runs_dir: Path) -> None:
    """SIGKILL `supervisor run`: within 5 s every process of the topology is gone, with no command run."""
    process = subprocess.Popen(
        [PYTHON, "-m", "supervisor", "run", str(hard_topology(tmp_path)), "--runs-dir", str(runs_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        seen = ""
        while "all 2 ready" not in seen:
            line = process.stderr.readline()
            assert line, seen
            seen += line
        run_dir = next(runs_dir.iterdir())
        grandchildren = [int(p) for p in (tmp_path / "pids").read_text().split()]
        assert len(grandchildren) == 5 and all(alive(p) for p in grandchildren)
        process.kill()
        process.wait(10)
        began = time.monotonic()
        wait_until(lambda: not marked_processes(run_dir.name) and not any(alive(p) for p in grandchildren), timeout=5)
        took = time.monotonic() - began
        events = run_dir / "events.jsonl"
        wait_until(lambda: "watchdog_sweep" in events.read_text(), timeout=10)
        sweep = [json.loads(line) for line in events.read_text().splitlines() if "watchdog_sweep" in line]
        assert sweep[0]["killed"], "the watchdog did the sweep"
        # and it wrote the summary the supervisor could not: users and harnesses read one after every run
        wait_until(lambda: (run_dir / "summary.json").exists(), timeout=10)
        summary = read_summary(run_dir)
        assert summary.outcome == "supervisor-died" and summary.ended_by == "watchdog", summary
        assert "died" in (summary.failure or "") and summary.run_id == run_dir.name
        assert list(summary.replicas) == ["tree", "web"] and list(summary.services) == ["tree", "web"]
        assert {r.state for r in summary.replicas.values()} == {"ready"}  # their last known state
        assert summary.replicas["tree"].killed and summary.replicas["web"].killed
        assert set(grandchildren) <= set(summary.killed) and summary.verified_no_leftovers
        # the readers take it: ps (the run stays indexed for gc) and logs
        listed = {run["run_id"]: run for run in json.loads(supervisor("ps", "--json").stdout)}
        assert listed[run_dir.name]["outcome"] == "supervisor-died"
        assert "supervisor died" in supervisor("ps").stdout
        logs = supervisor("logs", run_dir.name, "web")
        assert logs.returncode == 0, logs.stderr
        print(f"zero survivors {took * 1000:.0f} ms after the supervisor's SIGKILL")
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        assert process.stderr is not None
        process.stderr.close()


def test_gc_stops_leftovers_when_supervisor_and_watchdog_both_died(
    tmp_path: Path, runs_dir: Path, private_state_dir: Path
) -> None:
    run_id, run_dir = start_detached(hard_topology(tmp_path), runs_dir)
    pids = run_pids(run_dir)
    # stopped first: a live supervisor replaces a killed watchdog at once, and the new one would sweep the run
    os.kill(pids["supervisor"], signal.SIGSTOP)
    os.kill(watchdog_pid(private_state_dir, run_id), signal.SIGKILL)
    os.kill(pids["supervisor"], signal.SIGKILL)
    wait_until(lambda: not alive(pids["supervisor"]), timeout=10)
    assert marked_processes(run_id), "with both dead, the topology is orphaned"
    dry = supervisor("gc")
    assert dry.returncode == 0 and run_id in dry.stdout and marked_processes(run_id)  # dry run: nothing touched
    assert not (run_dir / "summary.json").exists()  # nobody was left to write it
    left = set(marked_processes(run_id))
    result = supervisor("gc", "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    assert marked_processes(run_id) == {}
    summary = read_summary(run_dir)  # gc wrote the summary that supervisor and watchdog could not
    assert summary.outcome == "supervisor-died" and summary.ended_by == "gc", summary
    assert f"pid {pids['supervisor']}" in (summary.failure or "")
    assert list(summary.replicas) == ["tree", "web"] and summary.verified_no_leftovers
    assert {r.state for r in summary.replicas.values()} == {"ready"}  # as they were, not "stopped" by gc
    assert left <= set(summary.killed)


def test_a_reused_pid_is_never_signalled(tmp_path: Path, runs_dir: Path, private_state_dir: Path) -> None:
    """Make a dead run's record name a live, unrelated process (as if its pid had been reused): stop and gc
    leave it alone because its create time does not match."""
    run_id, run_dir = start_detached(hard_topology(tmp_path), runs_dir)
    assert supervisor("stop", run_id).returncode == 0
    bystander = subprocess.Popen([PYTHON, "-c", "import time; time.sleep(60)"])
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text())
        manifest["phase"] = "running"
        manifest["services"]["web"]["replicas"][0]["pid"] = bystander.pid
        manifest["services"]["web"]["replicas"][0]["pgid"] = bystander.pid
        (run_dir / "manifest.json").write_text(json.dumps(manifest))
        index = private_state_dir / "topovisor" / "index"
        (index / f"{run_id}.json").write_text(
            json.dumps({"run_id": run_id, "run_dir": str(run_dir), "supervisor_pid": manifest["supervisor_pid"]})
        )
        supervisor("stop", run_id)
        supervisor("gc", "--yes")
        assert bystander.poll() is None, "an unrelated process was signalled"
    finally:
        bystander.kill()
        bystander.wait()


def test_a_taken_fixed_port_is_reported_with_its_owner_before_start(tmp_path: Path, runs_dir: Path) -> None:
    squatter = subprocess.Popen(
        [PYTHON, "-u", "-m", "http.server", "--bind", "127.0.0.1", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert squatter.stdout is not None
        port = int(squatter.stdout.readline().split("port ")[1].split()[0])
        path = tmp_path / "t.yaml"
        path.write_text(f"name: t\nservices:\n  web:\n    command: [sleep, '60']\n    ports: {{http: {port}}}\n")
        result = supervisor("run", str(path), "--runs-dir", str(runs_dir))
        assert result.returncode == 2
        assert f"port {port} is already in use on 127.0.0.1 by pid {squatter.pid}" in result.stderr
        assert "http.server" in result.stderr and "service 'web'" in result.stderr
    finally:
        squatter.kill()
        squatter.wait()
        assert squatter.stdout is not None
        squatter.stdout.close()


def test_a_killed_watchdog_is_replaced_and_still_sweeps(
    tmp_path: Path, runs_dir: Path, private_state_dir: Path
) -> None:
    run_id, run_dir = start_detached(hard_topology(tmp_path), runs_dir)
    pids = run_pids(run_dir)
    first = watchdog_pid(private_state_dir, run_id)
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: watchdog_pid(private_state_dir, run_id) != first, timeout=10)
    os.kill(pids["supervisor"], signal.SIGKILL)  # now only the replacement can clean up
    tree = [int(p) for p in (tmp_path / "pids").read_text().split()]
    wait_until(lambda: not marked_processes(run_id) and not any(alive(p) for p in tree), timeout=10)


def test_a_scrubbed_child_of_an_exited_leader_dies_with_a_sigkilled_supervisor(tmp_path: Path, runs_dir: Path) -> None:
    """A job's ``env -i`` child (no mark) that ignores SIGTERM outlives the job; while the supervisor waits
    out its grace, the supervisor is SIGKILLed. The job's leader was still unreaped, so its group is still
    the run's: the watchdog sweeps it (it used to forget the group when the leader exited)."""
    pidfile = tmp_path / "scrubbed.pid"
    inner = f'trap \\"\\" TERM; echo \\$\\$ > {pidfile}; exec /bin/sleep 100004'
    path = tmp_path / "scrubbed.yaml"
    path.write_text(
        "name: scrubbed\nservices:\n"
        "  job:\n"
        f"    command: [/bin/sh, -c, 'env -i /bin/sh -c \"{inner}\" & echo up']\n"
        "    stop: {grace: 10m}\n"
        "  web:\n    command: ['{python}', -m, http.server, --bind, 127.0.0.1, '{port}']\n    ports: [port]\n"
        "    ready: {http: 'http://127.0.0.1:{port}/'}\n"
    )
    process = subprocess.Popen(
        [PYTHON, "-m", "supervisor", "run", str(path), "--runs-dir", str(runs_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip
    scrubbed = 0
    try:
        run_dir = wait_until(lambda: runs_dir.is_dir() and next(runs_dir.iterdir(), None), timeout=60)
        events = run_dir / "events.jsonl"

        def leftovers_stopping() -> bool:
            lines = events.read_text().splitlines() if events.exists() else []
            return any('"stopping"' in line and '"job"' in line and "leftovers" in line for line in lines)

        wait_until(leftovers_stopping, timeout=60)  # the job exited; its scrubbed child is in its grace
        scrubbed = int(pidfile.read_text())
        assert alive(scrubbed) and "TOPOVISOR_RUN_ID" not in Path(f"/proc/{scrubbed}/environ").read_text()
        process.kill()
        process.wait(10)
        wait_until(lambda: not alive(scrubbed), timeout=30)
        wait_until(lambda: (run_dir / "summary.json").exists(), timeout=30)
        summary = read_summary(run_dir)
        assert summary.ended_by == "watchdog" and summary.verified_no_leftovers, summary
        assert scrubbed in summary.killed
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        if scrubbed and alive(scrubbed):
            os.kill(scrubbed, signal.SIGKILL)
