"""Ctrl-C as a user gives it: at a real terminal (a pty), and to ``run --detach`` while it starts."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from supervisor._host.proctable import marked_processes

from ..helpers import PYTHON, alive, ctrl_c_at_a_terminal, wait_until

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
