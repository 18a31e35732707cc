"""``supervisor ps | stop | gc | logs`` as a user runs them: real processes, exit codes and output."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import psutil
import pytest

from supervisor._cli.main import main
from supervisor._cli.table import COMMANDS, build_parser
from supervisor._records.record import list_runs, register_run

from ..fakerun import STUBBORN, Reaper, replica_entry, write_run
from ..helpers import PYTHON, alive, supervisor_cli, wait_until

ROOT = Path(__file__).parents[2]


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m supervisor`` with this test's state dir (inherited through the environment)."""
    return supervisor_cli(*args, timeout=timeout)


def live_run(reaper: Reaper, runs_dir: Path, run_id: str) -> tuple[Path, list[int]]:
    """A run whose 'supervisor' is a live process of ours, with a replicated service and one with a port."""
    supervisor = reaper.start([PYTHON, "-c", STUBBORN])
    kv = reaper.start_replica(run_id, "kv")
    api = [reaper.start_replica(run_id, f"api.{i}") for i in range(2)]
    run_dir = runs_dir / run_id
    services = {
        "kv": ([], [replica_entry("kv", kv, run_dir, ports={"port": 23790}, url="http://127.0.0.1:23790")]),
        "api": (["kv"], [replica_entry(f"api.{i}", p, run_dir, restarts=i * 2) for i, p in enumerate(api)]),
    }
    me = psutil.Process(supervisor.pid)
    write_run(runs_dir, run_id, services, supervisor=(me.pid, me.create_time()), name="demo")
    register_run(run_id, run_dir, supervisor_pid=supervisor.pid)
    return run_dir, [kv.pid, *(p.pid for p in api)]


def dead_run(reaper: Reaper, runs_dir: Path, run_id: str) -> tuple[Path, list[int]]:
    """A run whose supervisor died and left a stubborn replica behind."""
    orphan = reaper.start_replica(run_id, "web")
    run_dir = runs_dir / run_id
    write_run(runs_dir, run_id, {"web": ([], [replica_entry("web", orphan, run_dir)])}, name="crashed")
    register_run(run_id, run_dir, supervisor_pid=os.getpid() + 100000)
    return run_dir, [orphan.pid]


def test_ps_with_no_runs(runs_dir: Path) -> None:
    """An empty index says so (and points at --all); --json gives an empty list."""
    result = cli("ps")
    assert result.returncode == 0 and "no runs" in result.stdout
    assert json.loads(cli("ps", "--json").stdout) == []


def test_ps_shows_runs_replicas_pids_ports_uptime_and_restarts(reaper: Reaper, runs_dir: Path) -> None:
    """A live run and an orphaned one: table and JSON agree."""
    _, live_pids = live_run(reaper, runs_dir, "20250101-000000-demo-aaa111")
    _, dead_pids = dead_run(reaper, runs_dir, "20250101-000001-crashed-bbb222")
    result = cli("ps")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "20250101-000000-demo-aaa111" in text and "running" in text
    assert "orphaned" in text and "(dead)" in text and "left over" in text
    kv_line = next(line for line in text.splitlines() if line.strip().startswith("kv "))
    assert str(live_pids[0]) in kv_line and "port=23790" in kv_line and "ready" in kv_line
    views = {view["run_id"]: view for view in json.loads(cli("ps", "--json").stdout)}
    live, dead = views["20250101-000000-demo-aaa111"], views["20250101-000001-crashed-bbb222"]
    assert live["status"] == "running" and live["supervisor"]["alive"] and live["uptime_seconds"] > 0
    replicas = [r for s in live["services"].values() for r in s["replicas"]]
    assert [r["name"] for r in replicas] == ["kv", "api.0", "api.1"]
    assert [r["restarts"] for r in replicas] == [0, 0, 2]
    assert all(r["alive"] and r["uptime_seconds"] >= 0 for r in replicas)
    assert live["services"]["api"]["depends_on"] == ["kv"]
    assert dead["status"] == "orphaned" and dead["leftovers"] == dead_pids


def test_stop_unknown_run_is_bad_input(runs_dir: Path) -> None:
    """Exit 2 and one line naming what was asked for."""
    result = cli("stop", "nope")
    assert result.returncode == 2
    assert "no run matches 'nope'" in result.stderr and "Traceback" not in result.stderr


def test_stop_a_run_whose_supervisor_died(reaper: Reaper, runs_dir: Path) -> None:
    """By suffix; SIGTERM is ignored, so --grace decides when SIGKILL comes; the run leaves the index."""
    _, pids = dead_run(reaper, runs_dir, "20250101-000001-crashed-bbb222")
    result = cli("stop", "bbb222", "--grace", "100ms")
    assert result.returncode == 0, result.stderr
    assert "supervisor is dead; stopped 1 processes from the record (1 needed SIGKILL)" in result.stdout
    assert not any(alive(pid) for pid in pids)
    assert list_runs() == []
    again = cli("stop", str(runs_dir / "20250101-000001-crashed-bbb222"))
    assert again.returncode == 0 and "nothing is running" in again.stdout


def test_stop_rejects_a_bad_duration(runs_dir: Path) -> None:
    """--grace takes the same durations as YAML; anything else is bad input before anything is looked up."""
    result = cli("stop", "x", "--grace", "soon")
    assert result.returncode == 2 and "expected a duration" in result.stderr


def test_gc_lists_first_and_stops_only_with_yes(reaper: Reaper, runs_dir: Path) -> None:
    """Dry run by default; --yes stops the dead run's leftovers and clears stale entries; a live run is
    never touched."""
    _, dead_pids = dead_run(reaper, runs_dir, "run-dead")
    _, live_pids = live_run(reaper, runs_dir, "run-live")
    register_run("run-stale", runs_dir / "run-stale", supervisor_pid=os.getpid() + 100000)
    dry = cli("gc")
    assert dry.returncode == 0, dry.stderr
    assert f"run run-dead: supervisor {os.getpid() + 100000} is dead; left over: {dead_pids[0]}" in dry.stdout
    assert "run run-stale:" in dry.stdout and "nothing left (stale record)" in dry.stdout
    assert "run-live" not in dry.stdout and "dry run" in dry.stdout
    assert all(alive(pid) for pid in dead_pids)
    done = cli("gc", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not any(alive(pid) for pid in dead_pids) and all(alive(pid) for pid in live_pids)
    assert [r.run_id for r in list_runs()] == ["run-live"]
    assert "run-dead" not in cli("gc").stdout


def test_gc_cuts_a_long_command_line_between_its_arguments(reaper: Reaper, runs_dir: Path) -> None:
    """A left-over process's command line is cut at an argument's end, marked with an ellipsis, never in
    the middle of one (the script of ``python -c`` was cut, newline and all, at character 60)."""
    _, (orphan,) = dead_run(reaper, runs_dir, "run-long")
    dry = cli("gc")
    assert dry.returncode == 0, dry.stderr
    assert f"left over: {orphan} ({PYTHON} -c ...)\n" in dry.stdout, dry.stdout
    assert cli("gc", "--yes").returncode == 0


def test_finished_runs_in_a_runs_dir_of_their_own_stay_listed_and_named_by_id(tmp_path: Path) -> None:
    """A run with ``--runs-dir`` elsewhere than the default, once finished, is in ``ps --all`` and its
    id (or a suffix) finds it for ``logs`` (it was omitted, and only its path worked); deleting its
    directory drops it from the list."""
    elsewhere = tmp_path / "elsewhere"
    topology = tmp_path / "one.yaml"
    topology.write_text(
        f"name: one\nservices:\n  web:\n    command: ['{PYTHON}', -c, \"print('hello', flush=True)\"]\n"
    )
    done = cli("run", str(topology), "--runs-dir", str(elsewhere), "-q")
    assert done.returncode == 0, done.stderr
    (run_dir,) = elsewhere.iterdir()
    run_id = run_dir.name
    assert cli("ps").stdout.startswith("no runs")  # finished: not running
    views = json.loads(cli("ps", "--all", "--json").stdout)
    assert [(v["run_id"], v["run_dir"], v["status"]) for v in views] == [(run_id, str(run_dir), "stopped")]
    for named in (run_id, run_id[-6:]):
        logs = cli("logs", named, "web")
        assert logs.returncode == 0 and logs.stdout == "hello\n", logs.stdout + logs.stderr
    shutil.rmtree(run_dir)
    assert json.loads(cli("ps", "--all", "--json").stdout) == []


def write_log(run_dir: Path, name: str, lines: list[str]) -> None:
    with open(run_dir / "logs" / f"{name}.log", "a") as file:
        file.write("".join(f"{line}\n" for line in lines))


def test_logs_of_a_replica_a_service_or_all(reaper: Reaper, runs_dir: Path) -> None:
    """-n picks the history; several replicas are prefixed; an unknown service is bad input."""
    run_dir, _ = live_run(reaper, runs_dir, "run-logs")
    write_log(run_dir, "kv", [f"kv line {i}" for i in range(5)])
    write_log(run_dir, "api.0", ["zero"])
    write_log(run_dir, "api.1", ["one"])
    kv = cli("logs", "run-logs", "kv", "-n", "2")
    assert kv.returncode == 0 and kv.stdout == "kv line 3\nkv line 4\n"
    assert cli("logs", "run-logs", "api").stdout == "api.0 | zero\napi.1 | one\n"
    assert cli("logs", "run-logs", "api.1").stdout == "one\n"
    everything = cli("logs", "run-logs", "-n", "1").stdout.splitlines()
    assert everything == ["kv | kv line 4", "api.0 | zero", "api.1 | one"]
    unknown = cli("logs", "run-logs", "nope")
    assert (
        unknown.returncode == 2 and "has no service or replica 'nope'; it has: api, api.0, api.1, kv" in unknown.stderr
    )


def test_logs_history_reaches_into_the_rotated_file(reaper: Reaper, runs_dir: Path) -> None:
    """Right after a rotation the current file is short: -n takes the rest from x.log.1."""
    run_dir, _ = live_run(reaper, runs_dir, "run-rotated")
    (run_dir / "logs" / "kv.log.1").write_text("old 1\nold 2\n")
    write_log(run_dir, "kv", ["new 1"])
    assert cli("logs", "run-rotated", "kv", "-n", "2").stdout == "old 2\nnew 1\n"


def test_logs_follow_across_rotation_until_the_run_ends(reaper: Reaper, runs_dir: Path) -> None:
    """-f prints new lines as they come, keeps going when the file rotates, and exits 0 once the run is over."""
    run_dir, pids = live_run(reaper, runs_dir, "run-follow")
    log = run_dir / "logs" / "kv.log"
    write_log(run_dir, "kv", ["before"])
    follower = subprocess.Popen([PYTHON, "-m", "supervisor", "logs", "run-follow", "kv", "-f", "-n", "1"],
                                stdout=subprocess.PIPE, text=True, cwd=ROOT)  # fmt: skip
    try:
        seen: list[str] = []
        reader = threading.Thread(target=lambda: seen.extend(follower.stdout or []), daemon=True)
        reader.start()
        wait_until(lambda: seen == ["before\n"])
        write_log(run_dir, "kv", ["a1", "a2"])
        wait_until(lambda: seen[-1:] == ["a2\n"])
        write_log(run_dir, "kv", ["a3"])
        os.replace(log, log.with_name("kv.log.1"))  # rotation, as RotatingLogFile does it
        write_log(run_dir, "kv", ["b1", "b2"])
        wait_until(lambda: seen[-1:] == ["b2\n"])
        assert seen == ["before\n", "a1\n", "a2\n", "a3\n", "b1\n", "b2\n"]
        assert follower.poll() is None
        reaper.cleanup()  # the run ends: its supervisor and replicas are gone
        assert follower.wait(10) == 0
        reader.join(10)
    finally:
        if follower.poll() is None:
            follower.kill()
        follower.wait(10)
        if follower.stdout is not None:
            follower.stdout.close()
    assert not any(alive(pid) for pid in pids)


def test_one_table_builds_the_parser_and_dispatches_every_command(
    reaper: Reaper, runs_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every command of the table is in the parser, in order, and its handler resolves; ``main`` runs the
    runs' commands in this process through the same dispatcher as ``run`` (exit 2 for an unknown run)."""
    names = [command.name for command in COMMANDS]
    assert names == ["run", "validate", "sbatch", "graph", "ps", "stop", "gc", "logs", "env", "status",
                     "restart", "scale", "autoscale", "sweep", "ab", "report", "gpus"]  # fmt: skip
    choices = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert list(choices) == names
    for command in COMMANDS:
        module, _, function = command.handler.partition(":")
        assert callable(getattr(importlib.import_module(f"supervisor._cli.{module}"), function)), command.name
    live_run(reaper, runs_dir, "run-dispatch")
    assert main(["ps", "--json"]) == 0
    (view,) = json.loads(capsys.readouterr().out)
    assert view["run_id"] == "run-dispatch" and view["name"] == "demo"
    assert main(["logs", "nope"]) == 2
    assert "supervisor: error: no run matches 'nope'" in capsys.readouterr().err
    assert main(["ps", "--", "true"]) == 2
    assert "only 'run', 'sbatch', 'sweep' and 'ab' take a command after --" in capsys.readouterr().err
