"""The ``supervisor`` command as a user runs it: a real process, real signals, exit codes, messages."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from supervisor._host.proctable import marked_processes

from ..helpers import PROGRAMS, PYTHON, alive, supervisor_cli, wait_until
from ..spec.test_all_at_once import NINE_LINES, NINE_PROBLEMS, NINE_WAITING

ROOT = Path(__file__).parents[2]


supervisor = supervisor_cli


CANARY_SERVICE = """
  canary:
    command: ["{python}", -c, "open('CANARY', 'w')"]
"""


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("  a: {command: [true], depends_on: [b]}\n  b: {command: [true], depends_on: [a]}\n", "dependency cycle: a -> b -> a"),
        ("  a: {command: [true], depends_on: [kvv]}\n", "unknown service 'kvv'"),
        ("  a: {command: [true], replicsa: 2}\n", "unknown field 'replicsa' (did you mean 'replicas'?)"),
        ("  a: {command: [true], stop: {grace: 10 parsecs}}\n", "field 'stop.grace': expected a duration"),
        ("  a: {command: [true], log: {max_bytes: big}}\n", "field 'log.max_bytes': expected a size"),
        ("  a: {command: [true], ready: {log: 'ready ('}}\n", "bad regex"),
        ("  a: {command: [true], ports: {http: 8000}}\n  b: {command: [true], ports: {http: 8000}}\n", "port 8000 is also a.http"),
        ("  a: {command: [true], replicas: -2}\n", "field 'replicas': must be 0 or more, got -2"),
        ("  a: {ports: [port]}\n", "field 'command': missing"),
        ("  a: {command: [true, '{prot}'], ports: [port]}\n", "unknown template {prot} (did you mean 'port'?)"),
        ("  a: {command: [no-such-engine-xyz, serve]}\n", "executable 'no-such-engine-xyz' not found on PATH"),
    ],
    ids=["cycle", "unknown-dep", "misspelt-field", "duration", "size", "regex", "port-clash", "negative-replicas",
         "no-command", "template", "executable"],
)  # fmt: skip
def test_bad_input_exits_2_with_one_message_and_starts_nothing(
    tmp_path: Path, runs_dir: Path, body: str, expected: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nservices:\n" + CANARY_SERVICE + body)
    result = supervisor("run", str(path), "--runs-dir", str(runs_dir), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and str(path) in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not (tmp_path / "CANARY").exists()
    assert not runs_dir.exists() or not list(runs_dir.iterdir())


def test_validate_reports_nine_problems_in_one_run_one_line_each(tmp_path: Path) -> None:
    path = tmp_path / "nine.yaml"
    path.write_text(NINE_PROBLEMS)
    result = supervisor("validate", str(path), "--set", "n=abc", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == "", result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == f"supervisor: error: {path}: 9 problems:", result.stderr
    for expected in NINE_LINES:
        assert sum(line.startswith(f"  - {expected}") for line in lines) == 1, (expected, result.stderr)
    assert lines[1:] == [line for line in lines[1:] if line.startswith("  - ")] + [f"  {NINE_WAITING}"]


def test_validate_shows_the_start_order() -> None:
    result = supervisor("validate", "examples/demo.yaml")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "ok: examples/demo.yaml: 4 services, 6 replicas"
    order = [line.split()[0] for line in lines[1:]]
    assert order == ["kv", "prefill.0", "prefill.1", "decode.0", "decode.1", "frontend"]


def test_validate_commands_shows_what_each_replica_runs_with_secrets_hidden(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        "name: sec\nservices:\n  a:\n    command: [sleep, '10', --api-key, '${HF_TOKEN}', '{port}']\n"
        "    ports: [port]\n    env: {HF_TOKEN: '${HF_TOKEN}', DB: 'postgres://u:pw12345678@h/db', MODE: two words}\n"
    )
    result = supervisor("validate", "--commands", str(path), env={**os.environ, "HF_TOKEN": "hf_secret123456"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    port = lines[1].rsplit("port=", 1)[1]
    assert lines[2:] == [
        "    HF_TOKEN='<redacted>'",
        "    DB='postgres://u:<redacted>@h/db'",
        "    MODE='two words'",
        f"    sleep 10 --api-key '<redacted>' {port}",
    ]
    assert "hf_secret123456" not in result.stdout + result.stderr


def test_a_reader_that_leaves_early_is_not_an_error_trace() -> None:
    """``supervisor validate -c FILE | head -1``: exit 141 like other tools, no BrokenPipeError traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first write
    try:
        result = subprocess.run(
            [PYTHON, "-m", "supervisor", "validate", "-c", "examples/demo.yaml"],
            cwd=ROOT, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert result.returncode == 141, result.stderr
    assert "Traceback" not in result.stderr


def test_set_overrides_fields_and_reports_misspellings() -> None:
    result = supervisor("validate", "examples/demo.yaml", "--set", "services.decode.replicas=3")
    assert result.returncode == 0 and "decode.2" in result.stdout
    result = supervisor("validate", "examples/demo.yaml", "--set", "services.decod.replicas=3")
    assert result.returncode == 2 and "did you mean 'decode'" in result.stderr
    for blank in ("=x", " =x"):  # a blank key was taken as the var '' (and ignored)
        result = supervisor("validate", "examples/demo.yaml", "--set", blank)
        assert result.returncode == 2 and "expected KEY=VALUE" in result.stderr, result.stderr


def test_demo_serves_a_chat_completion_then_tears_down(runs_dir: Path) -> None:
    """The README's first command: all ready, CMD talks to the frontend, CMD's exit code is ours."""
    result = supervisor(
        "run",
        "examples/demo.yaml",
        "--runs-dir",
        str(runs_dir),
        "--",
        "{python}",
        "examples/demo_client.py",
        "{frontend.url}",
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "tokens=" in result.stdout
    assert "all 6 ready" in result.stderr and "everything is down" in result.stderr


def test_command_exit_code_is_the_cli_exit_code(tmp_path: Path, runs_dir: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text('name: t\nservices:\n  web:\n    command: ["{python}", -m, http.server, --bind, 127.0.0.1, "{port}"]\n'
                    '    ports: [port]\n    ready: {tcp: "{port}"}\n')  # fmt: skip
    code = "import sys, urllib.request; urllib.request.urlopen(sys.argv[1]).read(); sys.exit(5)"
    result = supervisor("run", str(path), "-q", "--runs-dir", str(runs_dir), "--", PYTHON, "-c", code, "{web.url}")
    assert result.returncode == 5, result.stderr


def test_a_service_failure_exits_1_naming_the_service(tmp_path: Path, runs_dir: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text('name: t\nservices:\n  worker:\n    command: ["{python}", -c, "import sys; print(\'bad model path\'); sys.exit(4)"]\n'
                    '    ready: {log: never}\n')  # fmt: skip
    result = supervisor("run", str(path), "--runs-dir", str(runs_dir))
    assert result.returncode == 1
    assert "worker: exited with code 4 before it was ready" in result.stderr and "bad model path" in result.stderr
    assert "Traceback" not in result.stderr


def _start_stubborn(tmp_path: Path, runs_dir: Path, grace: str) -> tuple[subprocess.Popen[str], Path]:
    pids = tmp_path / "pids"
    path = tmp_path / "t.yaml"
    path.write_text(
        "name: t\nservices:\n  tree:\n"
        f"    command: ['{{python}}', '{PROGRAMS / 'tree.py'}', --pids, '{pids}', --ignore-term, --children, '1',"
        " --setsid-children, '2', --daemon]\n"
        f"    ready: {{log: tree ready}}\n    stop: {{grace: {grace}}}\n"
        "  web:\n    command: ['{python}', -m, http.server, --bind, 127.0.0.1, '{port}']\n    ports: [port]\n"
        "    depends_on: [tree]\n    ready: {http: 'http://127.0.0.1:{port}/'}\n"
    )
    process = subprocess.Popen(
        [PYTHON, "-m", "supervisor", "run", str(path), "--runs-dir", str(runs_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    return process, pids


def _wait_all_ready(process: subprocess.Popen[str]) -> str:
    assert process.stderr is not None
    seen = ""
    deadline = time.monotonic() + 30
    while "all 2 ready" not in seen and time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        seen += line
    assert "all 2 ready" in seen, seen
    return seen


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_means_orderly_teardown_and_nothing_survives(tmp_path: Path, runs_dir: Path, signum: int) -> None:
    process, pids_file = _start_stubborn(tmp_path, runs_dir, grace="300ms")
    try:
        _wait_all_ready(process)
        pids = [int(p) for p in pids_file.read_text().split()]
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 128 + signum, stderr
    assert f"stopped by {signal.Signals(signum).name}" in stderr
    assert not [pid for pid in pids if alive(pid)]
    run_id = next(runs_dir.iterdir()).name
    assert marked_processes(run_id) == {}


def test_second_signal_kills_at_once(tmp_path: Path, runs_dir: Path) -> None:
    process, pids_file = _start_stubborn(tmp_path, runs_dir, grace="60s")
    try:
        _wait_all_ready(process)
        pids = [int(p) for p in pids_file.read_text().split()]
        manifest = json.loads(next(runs_dir.iterdir()).joinpath("manifest.json").read_text())
        web_pid = manifest["services"]["web"]["replicas"][0]["pid"]
        process.send_signal(signal.SIGINT)
        wait_until(lambda: not alive(web_pid), timeout=10)  # teardown reached the stubborn tree's 60 s grace
        began = time.monotonic()
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
        assert time.monotonic() - began < 10  # not the 60 s grace
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert not [pid for pid in pids if alive(pid)]


def test_python_dash_m_and_console_script_agree() -> None:
    console = Path(sys.executable).parent / "supervisor"
    if not console.exists():
        pytest.skip("console script not installed next to this interpreter")
    a = subprocess.run([str(console), "--help"], capture_output=True, text=True, timeout=30)
    b = supervisor("--help")
    assert a.returncode == b.returncode == 0 and "validate" in a.stdout and a.stdout == b.stdout


def test_logs_flag_streams_prefixed_output(tmp_path: Path, runs_dir: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        "name: t\nservices:\n  talker:\n    command: ['{python}', -c, \"print('hello from talker', flush=True)\"]\n"
    )
    result = supervisor("run", str(path), "--logs", "--runs-dir", str(runs_dir))
    assert result.returncode == 0, result.stderr
    assert "talker | hello from talker" in result.stdout
    assert "verified: no process of the run is left" in result.stderr


def _seconds_of_day(line: str) -> float:
    hours, minutes, seconds = line.split(" ", 1)[0].split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def test_run_lines_are_stamped_in_the_order_they_are_printed(tmp_path: Path, runs_dir: Path) -> None:
    """The header comes first and no line is stamped earlier than one printed before it: the head start
    spawns before the header is printed, and the header, stamped when printed, read as later than the
    ``started`` line after it."""
    topology = tmp_path / "order.yaml"
    up = "print('up', flush=True)"
    topology.write_text(
        f'name: order\nservices:\n  a:\n    command: ["{{python}}", -c, "{up}"]\n'
        f'  b:\n    command: ["{{python}}", -c, "{up}"]\n    depends_on: [a]\n'
    )
    result = supervisor("run", str(topology), "--runs-dir", str(runs_dir))
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if " [supervisor] " in line]
    assert " [supervisor] run " in lines[0] and " [supervisor] containment: " in lines[1], lines
    assert " [supervisor] a: started, pid " in lines[2], lines
    stamps = [_seconds_of_day(line) for line in lines]
    for earlier, later in itertools.pairwise(stamps):
        assert later >= earlier or earlier - later > 12 * 3600, lines  # (or the day turned meanwhile)
