"""``supervisor run --detach`` and the commands that drive a live run through its control socket:
``status``, ``restart`` (plain and ``--rolling``), ``scale`` and ``stop``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from supervisor._proctable import marked_processes

from .helpers import PYTHON, alive, wait_until

ROOT = Path(__file__).parent.parent
_SLEEP = "import time; print('up', flush=True); time.sleep(3600)"


def supervisor(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "supervisor", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def write_topology(tmp_path: Path, *, worker_ready: str = "up") -> Path:
    path = tmp_path / "cli.yaml"
    path.write_text(
        "name: clictl\nservices:\n"
        f"  web:\n    command: ['{{python}}', -c, {json.dumps(_SLEEP)}]\n    ports: [port]\n    ready: {{log: up}}\n"
        f"  worker:\n    command: ['{{python}}', -c, {json.dumps(_SLEEP)}]\n    replicas: 2\n"
        f"    depends_on: [web]\n    ready: {{log: {worker_ready}, timeout: 1s}}\n"
    )
    return path


def test_detached_run_is_driven_by_status_restart_and_stop(tmp_path: Path, runs_dir: Path) -> None:
    """``run --detach`` returns once ready with the run id; ``status`` shows every replica (table and
    JSON), ``restart`` gives a new pid, ``scale``/``--rolling`` reach the run, ``stop`` goes through the
    run's own teardown: nothing is left and the records say stopped."""
    started = supervisor("run", "--detach", str(write_topology(tmp_path)), "--runs-dir", str(runs_dir))
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    run_dir = runs_dir / run_id
    assert str(run_dir) in started.stderr and "supervisor.log" in started.stderr
    assert (run_dir / "supervisor.log").is_file()  # the detached supervisor's own output lives in its run dir

    table = supervisor("status", run_id)
    assert table.returncode == 0, table.stderr
    assert f"run {run_id} (clictl): running" in table.stdout
    lines = table.stdout.splitlines()
    assert lines[1].split()[:3] == ["REPLICA", "STATE", "PID"] and len(lines) == 5
    assert [line.split()[:2] for line in lines[2:]] == [["web", "ready"], ["worker.0", "ready"], ["worker.1", "ready"]]
    status = json.loads(supervisor("status", run_id, "--json").stdout)
    before = status["services"]["worker"]["replicas"][1]["pid"]
    assert status["services"]["web"]["replicas"][0]["url"].startswith("http://127.0.0.1:")

    restarted = supervisor("restart", run_id, "worker.1")
    assert restarted.returncode == 0, restarted.stderr
    assert "worker.1 restarted and ready" in restarted.stdout
    after = json.loads(supervisor("status", run_id, "--json").stdout)["services"]["worker"]["replicas"][1]
    assert after["pid"] != before and after["restarts"] == 1 and not alive(before)

    unknown = supervisor("restart", run_id, "nope")
    assert unknown.returncode == 1 and "no service or replica named 'nope'" in unknown.stderr
    misuse = supervisor("restart", run_id, "worker", "--set", "x=1")
    assert misuse.returncode == 1 and "go with --rolling" in misuse.stderr
    scaled = supervisor("scale", run_id, "worker", "3")
    rolled = supervisor("restart", run_id, "worker", "--rolling", "--max-unavailable", "1")
    for result, op in ((scaled, "scale"), (rolled, "rolling_restart")):
        if result.returncode:  # until the group has the operation, the run says so
            assert f"'{op}' is not supported by this run" in result.stderr, result.stderr
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    asked = [e["op"] for e in events if e["event"] == "control_request"]
    assert asked[:2] == ["restart", "restart"] and "scale" in asked and "rolling_restart" in asked

    supervisor_pid = json.loads((run_dir / "manifest.json").read_text())["supervisor_pid"]
    stopped = supervisor("stop", run_id)
    assert stopped.returncode == 0, stopped.stderr
    assert f"its supervisor (pid {supervisor_pid}) stopped it" in stopped.stdout
    assert not alive(supervisor_pid) and marked_processes(run_id) == {}
    assert json.loads((run_dir / "manifest.json").read_text())["phase"] == "stopped"
    final = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["op"] for e in final if e["event"] == "control_request"][-1] == "stop"
    gone = supervisor("status", str(run_dir))  # a finished run is out of the index: named by its dir
    assert gone.returncode == 1 and f"run {run_id} is not running (it was stopped)" in gone.stderr


def test_a_detached_run_that_fails_to_start_exits_non_zero_with_the_failure(tmp_path: Path, runs_dir: Path) -> None:
    """``run --detach`` waits for ready or failure: a readiness timeout is exit 1 with the failure's
    message, and nothing of the run is left."""
    result = supervisor(
        "run", "--detach", str(write_topology(tmp_path, worker_ready="never")), "--runs-dir", str(runs_dir)
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "worker.0" in result.stderr and "never" in result.stderr and result.stdout == ""
    run_dirs = [p for p in runs_dir.iterdir() if p.is_dir()]
    assert len(run_dirs) == 1
    wait_until(lambda: not marked_processes(run_dirs[0].name), timeout=30)


def test_commands_on_a_run_that_is_not_running_say_so(tmp_path: Path, runs_dir: Path) -> None:
    """``status``/``restart``/``scale`` of an unknown run are bad input (exit 2)."""
    for args in (("status", "nope"), ("restart", "nope", "web"), ("scale", "nope", "web", "2")):
        result = supervisor(*args)
        assert result.returncode == 2 and "no run matches 'nope'" in result.stderr, result.stderr
    bad = supervisor("scale", "nope", "web", "-1")
    assert bad.returncode == 2 and "expected 0 or more" in bad.stderr
