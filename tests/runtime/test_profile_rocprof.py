"""``profile: {tool: rocprof}``: AMD's rocprofv3 wraps each replica as nsys does. rocprofv3 cannot be installed
here: a golden argv, and a fake ``rocprofv3`` on PATH that, like the real one, runs the program and writes
``<output-directory>/<pid>_results.db`` once it exited (and records any signal sent to it instead)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import psutil
import pytest

import supervisor as sv
from supervisor._spec.load import topology_from_text

from ..helpers import PYTHON, SLEEPER, plan_problems, supervisor_cli
from .test_profile import problems, profiled

#: rocprofv3's CLI as the planner uses it: ``--output-directory D --output-file %pid% [args] -- program...``
FAKE_ROCPROFV3 = f"""#!{PYTHON}
import os, signal, subprocess, sys
args = sys.argv[1:]
directory, name = args[args.index("--output-directory") + 1], args[args.index("--output-file") + 1]
program = args[args.index("--") + 1:]
def noted(number, frame):  # the stop must signal the program, not the profiler
    open(os.path.join(directory, "profiler-signalled"), "w").close()
signal.signal(signal.SIGTERM, noted)
signal.signal(signal.SIGINT, noted)
child = subprocess.Popen(program)
code = child.wait()
os.makedirs(directory, exist_ok=True)
with open(os.path.join(directory, name.replace("%pid%", str(child.pid)) + "_results.db"), "w") as db:
    db.write("SQLite format 3 (fake) " + " ".join(args[:args.index("--")]))
sys.exit(code)
"""


def test_rocprof_wraps_each_replica_with_its_own_report_directory(runs_dir: Path) -> None:
    """Golden argv: ``rocprofv3 --output-directory <run_dir>/profiles/<replica> --output-file %pid% [args] --
    <argv>``; ``--runtime-trace`` when args choose nothing; a stop grace for the database to be written."""
    service = sv.Service("w", command=["vllm", "serve", "--port", "{port}"], ports=["port"], replicas=2,
                         profile=sv.Profile("rocprof", args=["--kernel-trace", "--stats"]))  # fmt: skip
    plan = profiled(service, runs_dir=runs_dir)
    profiles = plan.run_dir / "profiles"
    for replica in plan.service("w").replicas:
        assert replica.argv == (
            "rocprofv3", "--output-directory", str(profiles / replica.name), "--output-file", "%pid%",
            "--kernel-trace", "--stats", "--", "vllm", "serve", "--port", str(replica.port),
        )  # fmt: skip
        assert replica.profile is not None and replica.profile.wraps
        assert replica.profile.directory == replica.profile.report == str(profiles / replica.name)
        assert replica.stop.grace_seconds == 60.0
    bare = profiled(sv.Service("w", command=["python3"], profile="rocprof"), runs_dir=runs_dir)
    assert bare.service("w").replicas[0].argv[5:] == ("--runtime-trace", "--", "python3")


def test_rocprof_is_checked_like_any_executable_and_its_output_is_ours(runs_dir: Path) -> None:
    message = problems(sv.Service("w", command=["python3"], profile="rocprof"), runs_dir=runs_dir, missing="rocprofv3")
    assert "service 'w', field 'profile.tool': 'rocprofv3' not found on PATH; install ROCm's rocprofiler-sdk" in message
    taken = sv.Service("w", command=["python3"], profile=sv.Profile("rocprof", args=["-d", "/tmp/x"]))
    assert "field 'profile.args': the output is set for you (<run_dir>/profiles/<replica>); drop -d/-o" in (
        plan_problems(taken, runs_dir=runs_dir)
    )
    loaded = topology_from_text("name: t\nservices:\n  w: {command: [python3], profile: rocprof}\n")
    assert loaded.services[0].profile == sv.Profile("rocprof")


@pytest.fixture
def fake_rocprofv3(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "rocprofv3"
    program.write_text(FAKE_ROCPROFV3)
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def test_validate_commands_shows_the_wrapped_argv(tmp_path: Path, fake_rocprofv3: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("name: t\nservices:\n  w: {command: [python3, serve.py], profile: rocprof}\n")
    env = {**os.environ, "PATH": f"{fake_rocprofv3}{os.pathsep}{os.environ['PATH']}"}
    done = supervisor_cli(
        "validate", str(path), "--commands", "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path, env=env
    )
    assert done.returncode == 0, done.stderr
    line = next(line.strip() for line in done.stdout.splitlines() if "rocprofv3" in line)
    assert line.startswith("rocprofv3 --output-directory ") and "/profiles/w --output-file %pid%" in line
    assert line.endswith(" --runtime-trace -- python3 serve.py")


@pytest.mark.anyio
async def test_a_run_writes_the_report_where_the_docs_say(runs_dir: Path, fake_rocprofv3: Path) -> None:
    """The stop signals the program, not rocprofv3, which then writes ``<pid>_results.db`` in
    ``<run_dir>/profiles/<replica>``, one per replica, and exits by itself within the grace."""
    path = f"{fake_rocprofv3}{os.pathsep}{os.environ['PATH']}"
    service = sv.Service(
        "w", command=SLEEPER, replicas=2, env={"PATH": path}, ready=sv.LogCheck("service ready"), profile="rocprof"
    )
    async with sv.launch(sv.Topology(name="prof", services=[service]), runs_dir=runs_dir) as group:
        programs = {r.name: [c.pid for c in psutil.Process(r.pid).children()] for r in group.replicas}  # type: ignore[arg-type]
    for name, pids in programs.items():
        directory = group.plan.run_dir / "profiles" / name
        assert sorted(p.name for p in directory.iterdir()) == [f"{pids[0]}_results.db"], (name, pids)
        assert "--runtime-trace" in (directory / f"{pids[0]}_results.db").read_text()
    stopped = [e for e in group.event_history if isinstance(e, sv.Stopped)]
    assert len(stopped) == 2 and not any(e.killed for e in stopped)


def test_before_a_restart_the_ended_incarnations_reports_move_aside(tmp_path: Path) -> None:
    """rocprof's report is a directory: ``w.0`` moves whole to ``w.0~0`` (no suffix split off the name)."""
    from supervisor._spec.profile import PlannedProfile

    directory = tmp_path / "profiles" / "w.0"
    directory.mkdir(parents=True)
    (directory / "123_results.db").write_text("db")
    PlannedProfile("rocprof", str(directory), wraps=True).keep_previous(0)
    assert sorted(p.name for p in (tmp_path / "profiles").iterdir()) == ["w.0~0"]
    assert (tmp_path / "profiles" / "w.0~0" / "123_results.db").read_text() == "db"
