"""``supervisor run --detach`` and the commands that drive a live run through its control socket:
``status``, ``restart`` (plain and ``--rolling``), ``scale`` and ``stop``."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import socket
import stat
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from supervisor._control.protocol import short_address
from supervisor._host.proctable import marked_processes

from ..helpers import PROGRAMS, PYTHON, ROOT, alive, run_detached, supervisor_cli, wait_until

_SLEEP = "import time; print('up', flush=True); time.sleep(3600)"


supervisor = supervisor_cli


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
    assert lines[1].split()[-4:] == ["CPU", "MEM", "GPU", "MEM"]
    status = json.loads(supervisor("status", run_id, "--json").stdout)
    before = status["services"]["worker"]["replicas"][1]["pid"]
    assert status["containment"] in ("cgroup2", "freezer", "marks")

    def sampled() -> dict[str, Any] | None:  # the first sample comes within the sampler's interval
        replica = json.loads(supervisor("status", run_id, "--json").stdout)["services"]["web"]["replicas"][0]
        return replica["resources"]

    usage = wait_until(sampled, what="web's first resource sample")
    assert set(usage) == {
        "cpu_seconds",
        "cpu_percent",
        "memory_bytes",
        "memory_peak_bytes",
        "processes",
        "gpu_memory_bytes",
    }
    assert usage["processes"] == 1 and usage["memory_bytes"] > 0 and usage["gpu_memory_bytes"] is None
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
    for result in (scaled, rolled):
        assert result.returncode == 0, result.stdout + result.stderr
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    asked = [e["op"] for e in events if e["event"] == "control_request"]
    assert asked[:2] == ["restart", "restart"] and "scale" in asked and "rolling_restart" in asked

    supervisor_pid = json.loads((run_dir / "manifest.json").read_text())["supervisor_pid"]
    stopped = supervisor("stop", run_id)
    assert stopped.returncode == 0, stopped.stderr
    assert f"its supervisor (pid {supervisor_pid}) stopped it" in stopped.stdout
    # its two lines, in order, each ended, on the one stream (a reader of stdout, or of both, sees the same)
    assert stopped.stdout.splitlines()[0] == f"run {run_id}: stopping" and stopped.stdout.endswith("s\n")
    assert len(stopped.stdout.splitlines()) == 2 and stopped.stderr == "", stopped.stdout + stopped.stderr
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
    # either replica's readiness timeout may be the first failure: both wait on the same line
    assert re.search(r"worker\.[01]: not ready after", result.stderr) and "never" in result.stderr, result.stderr
    assert result.stdout == ""
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
    for count in ("10_000", "0x10", " 7"):  # int() would take the first and the last
        bad = supervisor("scale", "nope", "web", count)
        assert bad.returncode == 2 and "expected a whole number in decimal digits" in bad.stderr, bad.stderr


def test_gc_removes_the_control_sockets_a_killed_supervisor_left(tmp_path: Path, runs_dir: Path) -> None:
    """A SIGKILLed supervisor leaves ``control.sock`` in its run dir (and here a ``.control.sock.<pid>`` of
    a bind cut short); ``supervisor gc --yes`` removes both, keeps a plain file of such a name, and the
    manifest no longer names a socket."""
    run_id, run_dir = run_detached(write_topology(tmp_path), runs_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    supervisor_pid = manifest["supervisor_pid"]
    control = run_dir / "control.sock"
    assert manifest["control_socket"] == str(control) and stat.S_ISSOCK(os.lstat(control).st_mode)
    staging = run_dir / f".control.sock.{supervisor_pid + 1}"
    with short_address(staging) as address, socket.socket(socket.AF_UNIX) as aborted:
        aborted.bind(address)  # bound, never renamed into place: what a kill between the two leaves
    decoy = run_dir / ".control.sock.notes"
    decoy.write_text("not a socket\n")

    os.kill(supervisor_pid, signal.SIGKILL)
    wait_until(lambda: not alive(supervisor_pid), timeout=30)
    assert stat.S_ISSOCK(os.lstat(control).st_mode) and stat.S_ISSOCK(os.lstat(staging).st_mode)
    collected = supervisor("gc", "--yes")
    assert collected.returncode == 0, collected.stdout + collected.stderr
    assert f"run {run_id}: supervisor {supervisor_pid} is dead" in collected.stdout
    assert not control.exists() and not staging.exists() and decoy.read_text() == "not a socket\n"
    assert json.loads((run_dir / "manifest.json").read_text())["control_socket"] is None
    wait_until(lambda: not marked_processes(run_id), timeout=30)


def write_pool(tmp_path: Path) -> Path:
    """Two pool workers on their own ports, whose /health answers ``<pid> <version>``; version is a var."""
    worker = PROGRAMS / "pool_worker.py"
    path = tmp_path / "pool.yaml"
    path.write_text(
        'name: clipool\nvars: {version: "1"}\nservices:\n'
        f"  w:\n    command: ['{{python}}', '{worker}', --port, '{{port}}', --version, '${{version}}']\n"
        "    ports: [port]\n    replicas: 2\n    ready: {log: worker ready}\n    stop: {grace: 5s}\n"
    )
    return path


def replicas_of(run_id: str) -> list[dict[str, Any]]:
    status = supervisor("status", run_id, "--json")
    assert status.returncode == 0, status.stderr
    replicas: list[dict[str, Any]] = json.loads(status.stdout)["services"]["w"]["replicas"]
    return replicas


def health(url: str) -> tuple[int, str]:
    """(pid, version) as the replica's /health says."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{url}/health", timeout=10) as response:
        pid, version = response.read().decode().split()
    return int(pid), version


def test_scale_and_a_rolling_restart_from_the_cli_change_the_detached_run(tmp_path: Path, runs_dir: Path) -> None:
    """From other processes: ``scale RUN w 3`` adds w.2 (its own port, a live pid; w.0 and w.1 untouched),
    ``restart RUN w --rolling --set version=2`` gives every replica a new pid on the same port, serving
    version 2, and the run keeps 3 ready replicas; ``status --json`` shows each step as /health does."""
    run_id, _ = run_detached(write_pool(tmp_path), runs_dir)
    before = replicas_of(run_id)
    assert [r["name"] for r in before] == ["w.0", "w.1"] and all(r["state"] == "ready" for r in before)

    scaled = supervisor("scale", run_id, "w", "3")
    assert scaled.returncode == 0, scaled.stdout + scaled.stderr
    grown = replicas_of(run_id)
    assert [r["name"] for r in grown] == ["w.0", "w.1", "w.2"] and all(r["state"] == "ready" for r in grown)
    assert [(r["pid"], r["ports"]) for r in grown[:2]] == [(r["pid"], r["ports"]) for r in before]
    ports = [r["ports"]["port"] for r in grown]
    assert len(set(ports)) == 3 and alive(grown[2]["pid"])
    assert [health(r["url"]) for r in grown] == [(r["pid"], "1") for r in grown]

    rolled = supervisor("restart", run_id, "w", "--rolling", "--set", "version=2")
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    after = replicas_of(run_id)
    assert [r["name"] for r in after] == ["w.0", "w.1", "w.2"] and all(r["state"] == "ready" for r in after)
    assert [r["ports"]["port"] for r in after] == ports
    assert not {r["pid"] for r in after} & {r["pid"] for r in grown}
    assert not any(alive(r["pid"]) for r in grown)
    assert [health(r["url"]) for r in after] == [(r["pid"], "2") for r in after]
    assert [r["restarts"] for r in after] == [1, 1, 1]

    stopped = supervisor("stop", run_id)
    assert stopped.returncode == 0, stopped.stderr
    wait_until(lambda: not marked_processes(run_id), timeout=30)


def test_status_of_a_run_whose_dir_was_deleted_says_so(tmp_path: Path, runs_dir: Path) -> None:
    """A live run whose directory was deleted (its control socket with it): ``status`` says the directory
    is gone, not that the run is still starting or stopping; ``stop`` still stops it."""
    run_id, run_dir = run_detached(write_topology(tmp_path), runs_dir)
    shutil.rmtree(run_dir)
    status = supervisor("status", run_id)
    assert status.returncode == 1, status.stdout + status.stderr
    assert f"its run directory {run_dir} is gone" in status.stderr and "still starting" not in status.stderr
    stopped = supervisor("stop", run_id)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert stopped.stdout.splitlines()[0] == f"run {run_id}: stopping", stopped.stdout
    assert " stopped it in " in stopped.stdout.splitlines()[1], stopped.stdout
    wait_until(lambda: not marked_processes(run_id), timeout=30, what="the run to be stopped")


def _open_files_limit_1024() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


def test_a_scale_past_the_open_files_limit_is_refused_before_anything_starts(tmp_path: Path, runs_dir: Path) -> None:
    """A run whose open-files limit is 1024 (hard): ``scale web 300`` would need more (the start's own
    check, for the new total), so it is refused naming RLIMIT_NOFILE and the need, and nothing is added."""
    started = subprocess.run(
        [PYTHON, "-m", "supervisor", "run", "--detach", str(write_topology(tmp_path)), "--runs-dir", str(runs_dir)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, preexec_fn=_open_files_limit_1024,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    try:
        refused = supervisor("scale", run_id, "worker", "300")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        need = 64 + 4 * 301  # the start's estimate for the run's 301 replicas
        assert "scale 'worker' to 300: the run's 301 replicas need about" in refused.stderr, refused.stderr
        assert f"about {need} open files" in refused.stderr and "(RLIMIT_NOFILE, ulimit -n) is 1024" in refused.stderr
        events = [json.loads(line) for line in (runs_dir / run_id / "events.jsonl").read_text().splitlines()]
        assert not [e for e in events if e["event"] in ("replica_added", "spawned") and "worker.2" in e["replica"]]
        replicas = json.loads(supervisor("status", run_id, "--json").stdout)["services"]["worker"]["replicas"]
        assert [r["name"] for r in replicas] == ["worker.0", "worker.1"]
    finally:
        assert supervisor("stop", run_id).returncode == 0


def test_a_detached_runs_log_holds_its_event_lines_while_it_runs(tmp_path: Path, runs_dir: Path) -> None:
    """A ``--detach`` run's ``supervisor.log`` holds, while it runs, the plain event lines a ``run`` that
    is not on a terminal prints (started, ready, all ready), timestamped and with no control codes; it
    was started ``--quiet`` and stayed empty."""
    run_id, run_dir = run_detached(write_topology(tmp_path), runs_dir)
    try:
        text = (run_dir / "supervisor.log").read_text()  # written before the background run said ready
        assert "all 3 ready in " in text, text
        lines = text.splitlines()
        for replica in ("web", "worker.0", "worker.1"):
            assert any(re.search(rf"\[supervisor\] {re.escape(replica)}: started, pid \d+$", line) for line in lines)
            assert any(f"[supervisor] {replica}: ready in " in line for line in lines), text
        assert all(re.match(r"\d\d:\d\d:\d\d\.\d{3} ", line) for line in lines), text
        assert "\x1b" not in text
    finally:
        assert supervisor("stop", run_id).returncode == 0
    wait_until(lambda: not marked_processes(run_id), timeout=30, what="the run to be stopped")


def test_env_prints_a_detached_runs_client_variables_for_a_shell_to_eval(tmp_path: Path) -> None:
    """``eval "$(supervisor env RUN)"`` in /bin/sh gives the run's ``TOPOVISOR_*`` variables, the same
    addresses ``status`` shows, for a run named by id or by dir; a run dir whose path holds quotes, ``$(...)``
    and spaces comes through byte for byte and runs nothing. A stopped run is refused (exit 1)."""
    hostile = tmp_path / "runs $(touch pwned) `touch pwned2` 'q\" \\ $HOME"
    run_id, run_dir = run_detached(write_topology(tmp_path), hostile)
    try:
        status = json.loads(supervisor("status", run_id, "--json").stdout)
        url = status["services"]["web"]["replicas"][0]["url"]
        for named in (run_id, str(run_dir)):
            exported = supervisor("env", named)
            assert exported.returncode == 0, exported.stderr
            assert all(line.startswith("export TOPOVISOR_") for line in exported.stdout.splitlines()), exported.stdout
            shown = subprocess.run(
                ["/bin/sh", "-c", 'eval "$1"; printf "%s\\n" "$TOPOVISOR_WEB_URL" "$TOPOVISOR_WEB_URLS" '
                 '"$TOPOVISOR_WEB_PORT" "$TOPOVISOR_RUN_DIR" "${TOPOVISOR_RUN_ID-unset}"', "sh", exported.stdout],
                capture_output=True, text=True, timeout=30, cwd=tmp_path,
            )  # fmt: skip
            assert shown.returncode == 0 and shown.stderr == "", shown.stderr
            port = str(status["services"]["web"]["replicas"][0]["ports"]["port"])
            assert shown.stdout.splitlines() == [url, url, port, str(run_dir), "unset"]
            assert "TOPOVISOR_WORKER_" not in exported.stdout  # no port: no address
        assert not list(tmp_path.glob("pwned*")) and not list(ROOT.glob("pwned*"))
    finally:
        assert supervisor("stop", run_id).returncode == 0
    wait_until(lambda: not marked_processes(run_id), timeout=30, what="the run to be stopped")
    gone = supervisor("env", str(run_dir))
    assert gone.returncode == 1 and f"run {run_id} is not running (it was stopped)" in gone.stderr, gone.stderr
    assert gone.stdout == ""


def test_status_of_the_detached_demo_lists_each_services_api_and_attach_gives_the_same(runs_dir: Path) -> None:
    """``status --json`` has an ``api`` object per service (its routes as URLs on replica 0): the
    frontend's declared routes, then what each service's probes and ``metrics`` call; the table lists
    them; ``attach`` from another process reads the same."""
    run_id, _ = run_detached(ROOT / "examples" / "demo.yaml", runs_dir)
    try:
        status = json.loads(supervisor("status", run_id, "--json").stdout)["services"]
        frontend = status["frontend"]["replicas"][0]["url"]
        assert status["frontend"]["api"] == {
            "models": f"{frontend}/v1/models",
            "chat_completions": f"{frontend}/v1/chat/completions",
            "ready": f"{frontend}/health",
            "metrics": f"{frontend}/metrics",
        }
        for name in ("kv", "prefill", "decode"):
            url = status[name]["replicas"][0]["url"]
            assert status[name]["api"] == {"ready": f"{url}/health", "metrics": f"{url}/metrics"}, name
        assert status["decode"]["replicas"][1]["api"]["ready"] == status["decode"]["replicas"][1]["url"] + "/health"
        table = supervisor("status", run_id).stdout
        assert re.search(rf"^frontend +chat_completions +{re.escape(frontend)}/v1/chat/completions$", table, re.M)
        client = (
            "import json, sys, anyio, supervisor\n"
            "async def main():\n"
            "    async with supervisor.attach(sys.argv[1]) as group:\n"
            "        print(json.dumps({s.name: s.api for s in group}))\n"
            "anyio.run(main)\n"
        )
        attached = subprocess.run([PYTHON, "-c", client, run_id], capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert attached.returncode == 0, attached.stderr
        assert json.loads(attached.stdout) == {name: service["api"] for name, service in status.items()}
    finally:
        stopped = supervisor("stop", run_id)
        assert stopped.returncode == 0, stopped.stderr
    assert marked_processes(run_id) == {}
