"""The live status of ``supervisor run``: driven in a real pseudo-terminal, and plain through a pipe."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from ..helpers import PYTHON

pexpect = pytest.importorskip("pexpect")

ROOT = Path(__file__).parents[2]

# Prints its loading progress, then waits (bounded) for the file the test creates, then says it is ready.
LOADER = """
import os, sys, time
print("loading 3/8 shards", flush=True)
print("Loading safetensors checkpoint shards:  45% Completed | 3/8 [00:02<00:03,  1.50it/s]", flush=True)
deadline = time.monotonic() + 60
while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:
    time.sleep(0.02)
print("loader is serving", flush=True)
while True:
    time.sleep(1)
"""


def _topology(tmp_path: Path, *, extra: str = "") -> tuple[Path, Path]:
    script = tmp_path / "loader.py"
    script.write_text(LOADER)
    go = tmp_path / "go"
    path = tmp_path / "t.yaml"
    path.write_text(
        "name: console\nservices:\n"
        f"  loader:\n    command: ['{{python}}', '{script}', '{go}']\n"
        "    ready: {log: 'loader is serving', timeout: 60s}\n"
        "    stop: {signal: SIGTERM, grace: 5s}\n" + extra
    )
    return path, go


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM")}
    return {**env, "TERM": "xterm-256color", "COLUMNS": "200", "LINES": "40"}


def test_terminal_shows_the_loading_row_with_its_progress_then_ready(tmp_path: Path, runs_dir: Path) -> None:
    """On a terminal the table shows the loading replica's row with the percentage its log printed, then
    the same row ready with its time to ready; Ctrl-C tears down with the usual exit code."""
    path, go = _topology(tmp_path)
    child = pexpect.spawn(
        PYTHON, ["-m", "supervisor", "run", str(path), "--runs-dir", str(runs_dir)],
        cwd=str(ROOT), env=_env(), dimensions=(40, 200), timeout=60, encoding="utf-8", codec_errors="replace",
    )  # fmt: skip
    try:
        # one row: name, state, ..., a bar and the log's percentage with the time against the deadline
        child.expect(r"loader[^\n]*loading[^\n]*45% · [\d.]+s of 1m deadline \(\d+%\)")
        assert "\x1b[" in child.before + child.after  # drawn with control codes: a live table, not lines
        go.touch()
        child.expect(r"loader: ready in \d+\.\d\ds")
        child.expect(r"loader[^\n]*ready[^\n]*\d+\.\d\ds")  # the row: ready, and its time to ready
        child.expect(r"1/1 ready")
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 128 + signal.SIGINT, child.before


def test_a_pipe_gets_timestamped_lines_and_no_control_codes(tmp_path: Path, runs_dir: Path) -> None:
    """Through a pipe: no ``\\x1b`` anywhere, every supervisor line starts with a time, ``--logs loader``
    prefixes the loader's lines and leaves out the other service's."""
    path, go = _topology(
        tmp_path, extra="  chatter:\n    command: ['{python}', -c, \"print('chatter says hi', flush=True)\"]\n"
    )
    go.touch()
    result = subprocess.run(
        [PYTHON, "-m", "supervisor", "run", str(path), "--logs", "loader", "--runs-dir", str(runs_dir),
         "--", PYTHON, "-c", "pass"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout + result.stderr
    assert "loader | loader is serving" in result.stdout and "chatter says hi" not in result.stdout
    lines = [line for line in result.stderr.splitlines() if "[supervisor]" in line]
    assert lines and all(re.match(r"\d\d:\d\d:\d\d\.\d{3} \[supervisor\] ", line) for line in lines), lines
    assert any("all 2 ready" in line for line in lines)


def test_quiet_prints_only_problems(tmp_path: Path, runs_dir: Path) -> None:
    """``-q``: a clean run prints no event line at all (no started, no ready)."""
    path, go = _topology(tmp_path)
    go.touch()
    result = subprocess.run(
        [PYTHON, "-m", "supervisor", "run", str(path), "-q", "--runs-dir", str(runs_dir), "--", PYTHON, "-c", "pass"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "[supervisor]" not in result.stderr, result.stderr


def test_logs_names_an_unknown_service_before_anything_starts(tmp_path: Path, runs_dir: Path) -> None:
    """``--logs nope``: exit 2, naming what the topology has; FILE may also come after the services."""
    path, _ = _topology(tmp_path)
    result = subprocess.run(
        [PYTHON, "-m", "supervisor", "run", "--logs", "nope", str(path), "--runs-dir", str(runs_dir)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "--logs nope: no such service or replica; it has: loader" in result.stderr


def test_logs_on_a_terminal_scroll_above_the_table_with_a_coloured_prefix(tmp_path: Path, runs_dir: Path) -> None:
    """``--logs`` on a terminal: each output line gets its replica's prefix in colour (an SGR code before
    ``loader | ``), while the table goes on being drawn."""
    path, go = _topology(tmp_path)
    child = pexpect.spawn(
        PYTHON, ["-m", "supervisor", "run", str(path), "--logs", "--runs-dir", str(runs_dir)],
        cwd=str(ROOT), env=_env(), dimensions=(40, 200), timeout=60, encoding="utf-8", codec_errors="replace",
    )  # fmt: skip
    try:
        child.expect(r"\x1b\[[0-9;]+mloader \| \x1b\[0mloading 3/8 shards")
        go.touch()
        child.expect(r"\x1b\[[0-9;]+mloader \| \x1b\[0mloader is serving")
        child.expect(r"1/1 ready")
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 128 + signal.SIGINT, child.before
