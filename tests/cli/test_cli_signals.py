"""Ctrl-C as a user gives it: at a real terminal (a pty), and to ``run --detach`` while it starts."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from supervisor._host.proctable import marked_processes

from ..helpers import PYTHON, alive, ctrl_c_at_a_terminal, run_detached, supervisor_cli, wait_until

ROOT = Path(__file__).parents[2]
SLEEPER = "name: t\nservices:\n  s:\n    command: [sleep, '60']\n"

# CMD of a benchmark: catches Ctrl-C, then takes a moment to write its results.
BENCH = """
import pathlib, sys, time
out = pathlib.Path(sys.argv[1])
(out / "started").touch()
try:
    time.sleep(60)
except KeyboardInterrupt:
    time.sleep(0.5)
    (out / "results.json").write_text('{"ok": true}')
"""


def test_ctrl_c_at_a_terminal_lets_cmd_write_its_results(tmp_path: Path, runs_dir: Path) -> None:
    """The terminal's SIGINT reaches CMD too; the supervisor once SIGTERMed it at once and its results were lost."""
    topo = tmp_path / "t.yaml"
    topo.write_text(SLEEPER)
    bench = tmp_path / "bench.py"
    bench.write_text(BENCH)
    argv = [
        PYTHON,
        "-m",
        "supervisor",
        "run",
        str(topo),
        "--runs-dir",
        str(runs_dir),
        "-q",
        "--",
        PYTHON,
        str(bench),
        str(tmp_path),
    ]
    returncode, stderr = ctrl_c_at_a_terminal(argv, (tmp_path / "started").exists, cwd=ROOT)
    assert (tmp_path / "results.json").read_text() == '{"ok": true}', stderr
    assert returncode == 128 + signal.SIGINT, stderr
    assert marked_processes(next(runs_dir.iterdir()).name) == {}


def test_sigint_to_the_supervisor_alone_is_passed_on_to_cmd(tmp_path: Path, runs_dir: Path) -> None:
    """``kill -INT <supervisor>`` (no terminal): CMD gets the same SIGINT once, and its grace."""
    topo = tmp_path / "t.yaml"
    topo.write_text(SLEEPER)
    bench = tmp_path / "bench.py"
    bench.write_text(BENCH)
    process = subprocess.Popen(
        [PYTHON, "-m", "supervisor", "run", str(topo), "--runs-dir", str(runs_dir), "-q", "--", PYTHON, str(bench), str(tmp_path)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, cwd=ROOT,
    )  # fmt: skip
    try:
        wait_until(lambda: (tmp_path / "started").exists() or process.poll() is not None, timeout=30)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert (tmp_path / "results.json").exists(), stderr
    assert process.returncode == 128 + signal.SIGINT


def test_ctrl_c_while_a_detached_run_starts_cancels_it_whole(tmp_path: Path, runs_dir: Path) -> None:
    """Once, exit 130 and no run id, while the run went on loading in the background where nobody knew it."""
    topo = tmp_path / "slow.yaml"
    topo.write_text(
        "name: slow\nservices:\n  kv:\n    command: [sleep, '60']\n"
        "  loader:\n    command: [sleep, '60']\n    ready: {log: never printed, timeout: 10m}\n"
    )
    process = subprocess.Popen(
        [PYTHON, "-m", "supervisor", "run", "--detach", str(topo), "--runs-dir", str(runs_dir)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, text=True,
    )  # fmt: skip
    runs: list[Path] = []

    def loading() -> bool:
        runs[:] = [p for p in runs_dir.iterdir() if p.is_dir()] if runs_dir.is_dir() else []
        return bool(runs) and (runs[0] / "logs" / "loader.log").exists()

    try:
        wait_until(lambda: loading() or process.poll() is not None, timeout=30)
        assert process.poll() is None, process.communicate()
        leaders = list(marked_processes(runs[0].name))
        assert leaders  # the background run is loading
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 128 + signal.SIGINT, stderr
    assert stdout.strip() == ""  # no run id: there is no run to stop
    wait_until(lambda: marked_processes(runs[0].name) == {}, timeout=30)
    assert not [pid for pid in leaders if alive(pid)]
    summary = runs[0] / "summary.json"
    wait_until(summary.exists, timeout=30)  # the background supervisor tore down and closed its record


def _first_child(pid: int) -> int | None:
    """The first child ``pid`` has (the kernel lists it from its fork on), or None yet."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_while_detach_spawns_its_background_run_leaves_nothing(
    tmp_path: Path, runs_dir: Path, signum: signal.Signals
) -> None:
    """SIGINT as soon as the CLI has a child (inside its spawn): once exit 130 with the background run
    going on (28 of 28 tries; SIGTERM killed the CLI there and later as well); now the spawn holds the
    signal, then the run is stopped and waited for."""
    topo = tmp_path / "slow.yaml"
    topo.write_text(
        "name: slow\nservices:\n  loader:\n    command: [sleep, '60']\n    ready: {log: never, timeout: 10m}\n"
    )
    process = subprocess.Popen(
        [PYTHON, "-m", "supervisor", "run", "--detach", str(topo), "--runs-dir", str(runs_dir)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, text=True,
    )  # fmt: skip
    background: psutil.Process | None = None
    try:
        child = wait_until(lambda: _first_child(process.pid) or process.poll() is not None, timeout=30, interval=0)
        assert process.poll() is None, process.communicate()
        with contextlib.suppress(psutil.Error):
            background = psutil.Process(child)
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 128 + signum, stderr
        assert stdout.strip() == ""  # no run id: there is no run to stop
        assert background is None or not background.is_running(), f"the background run goes on: {stderr}"
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        if background is not None and background.is_running():  # ours: the test started it through the CLI
            background.terminate()
            background.wait(timeout=60)


def _blocked_signals(pid: int) -> int:
    """The mask of signals ``pid`` blocks (``SigBlk`` in /proc), as a bit set."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigBlk:"):
            return int(line.split()[1], 16)
    raise AssertionError(f"no SigBlk for {pid}")


def test_a_detached_run_and_its_services_block_no_stop_signal(tmp_path: Path, runs_dir: Path) -> None:
    """The parent blocks the stop signals while it spawns the background run, which inherits the mask: it
    must let them in, or its services would inherit a SIGTERM that never arrives."""
    topo = tmp_path / "t.yaml"
    topo.write_text(SLEEPER)
    run_id, run_dir = run_detached(topo, runs_dir)
    try:
        supervisor_pid = json.loads((run_dir / "manifest.json").read_text())["supervisor_pid"]
        stop_bits = sum(1 << (signum - 1) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP))
        for pid in (supervisor_pid, *marked_processes(run_id)):
            assert _blocked_signals(pid) & stop_bits == 0, pid
    finally:
        stopped = supervisor_cli("stop", run_id)
    assert stopped.returncode == 0, stopped.stderr


# CMD that counts its SIGINTs: the first raises KeyboardInterrupt; its cleanup waits for the test's word
# (that the supervisor has passed the stop on, or not) before it writes how many it got.
COUNTING_BENCH = """
import json, os, pathlib, signal, sys, time
out = pathlib.Path(sys.argv[1])
received = []

def on_sigint(signum, frame):
    received.append(signum)
    if len(received) == 1:
        raise KeyboardInterrupt

signal.signal(signal.SIGINT, on_sigint)
(out / "started").write_text(str(os.getpid()))
try:
    for _ in range(600):
        time.sleep(0.1)
except KeyboardInterrupt:
    (out / "caught").touch()
    for _ in range(600):
        if (out / "go").exists():
            break
        time.sleep(0.1)
    (out / "results.json").write_text(json.dumps({"sigints": len(received)}))
"""


def test_sigint_to_the_process_group_reaches_cmd_once(tmp_path: Path, runs_dir: Path) -> None:
    """``setsid supervisor run FILE -- CMD; kill -INT -- -PGID`` (no terminal): CMD got the group's SIGINT
    and the supervisor's, the second cutting its cleanup short; now it runs in a group of its own and gets
    only the one passed on. The supervisor is held (SIGSTOP) while the group is signalled, until CMD took
    a SIGINT that reached it: two pending SIGINTs would merge into one, hiding the defect."""
    topo = tmp_path / "t.yaml"
    topo.write_text(SLEEPER)
    bench = tmp_path / "bench.py"
    bench.write_text(COUNTING_BENCH)
    process = subprocess.Popen(
        [PYTHON, "-m", "supervisor", "run", str(topo), "--runs-dir", str(runs_dir), "--", PYTHON, str(bench), str(tmp_path)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, cwd=ROOT,
        text=True,
    )  # fmt: skip
    assert process.stderr is not None
    said: list[str] = []
    supervisor = psutil.Process(process.pid)
    try:
        started = tmp_path / "started"
        wait_until(lambda: (started.exists() and started.read_text()) or process.poll() is not None, timeout=30)
        assert process.poll() is None
        command_pid = int(started.read_text())
        supervisor.suspend()
        wait_until(lambda: supervisor.status() == psutil.STATUS_STOPPED, timeout=30)
        os.killpg(process.pid, signal.SIGINT)  # the supervisor leads its own group (CMD's too, before the fix)
        if os.getpgid(command_pid) == process.pid:
            wait_until((tmp_path / "caught").exists, timeout=30)
        supervisor.resume()
        for _ in range(200):  # its word on CMD comes once it has passed the SIGINT on (or not)
            said.append(process.stderr.readline())
            if "-- CMD" in said[-1] or not said[-1]:
                break
        (tmp_path / "go").touch()
        _, rest = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    stderr = "".join(said) + rest
    assert "-- CMD" in said[-1], stderr
    assert json.loads((tmp_path / "results.json").read_text()) == {"sigints": 1}, stderr
    assert process.returncode == 128 + signal.SIGINT, stderr
