"""Secrets never reach disk or the console: a real run's manifest, events, summary and CLI output."""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path

import anyio.to_thread
import pytest

import supervisor as sv
from supervisor._control.protocol import request_blocking
from supervisor._redact import REDACTED

from ..helpers import PYTHON, wait_for, wait_until

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).parents[2]
HF = "hf_callerSecret12345"
OPENAI = "sk-serviceSecret6789"
DBPW = "dbPassw0rd42"
SECRETS = (HF, OPENAI, DBPW)
#: prints its command line and environment, then a fatal line quoting the token
LEAK = (
    "import os, sys; print('argv', sys.argv, flush=True); "
    "print('env', os.environ['OPENAI_KEY'], os.environ['DATABASE_URL'], flush=True); "
    "print('FATAL: bad token', sys.argv[1], flush=True); sys.exit(3)"
)


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} reached {where}"


async def test_a_failed_run_writes_no_secret_to_manifest_events_or_summary(
    runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """argv (--hf-token from the caller's env, --api-key=), env by name and URL password, a fatal log line
    quoted in the Failed event, and the log tail in the summary: all redacted."""
    monkeypatch.setenv("HF_TOKEN", HF)
    ok = sv.Service(
        name="ok",
        command=[PYTHON, "-c", "print('up', flush=True); import time; time.sleep(3600)", f"--api-key={OPENAI}"],
        ready=sv.LogCheck("up"),
    )
    leaky = sv.Service(
        name="leaky",
        command=[PYTHON, "-c", LEAK, HF, "--hf-token", HF],
        env={"OPENAI_KEY": OPENAI, "DATABASE_URL": f"postgres://app:{DBPW}@127.0.0.1/db", "MODE": "plain"},
        depends_on=[sv.Dependency("ok", "ready")],
        fatal=("FATAL",),
        ready=sv.LogCheck("never"),
    )
    topo = sv.Topology(name="sec", services=[ok, leaky])
    with pytest.raises(sv.ServiceFailed) as failure:
        async with sv.launch(topo, runs_dir=runs_dir):
            pass
    (run_dir,) = runs_dir.iterdir()
    assert HF in "\n".join(failure.value.log_tail)  # the Python API is not redacted: the caller owns it
    manifest = (run_dir / "manifest.json").read_text()
    events = (run_dir / "events.jsonl").read_text()
    summary = (run_dir / "summary.json").read_text()
    for name, text in (("manifest.json", manifest), ("events.jsonl", events), ("summary.json", summary)):
        assert_no_secret(text, name)
    assert '"MODE": "plain"' in manifest and "postgres://app:<redacted>@127.0.0.1/db" in manifest
    assert '"--api-key=<redacted>"' in manifest and '"--hf-token", "<redacted>"' in manifest
    assert "FATAL: bad token <redacted>" in events, events  # the quoted fatal line is there, without the token
    assert "<redacted>" in summary and "FATAL: bad token" in summary  # the log tail is there, redacted


def test_cli_console_shows_no_secret(tmp_path: Path, runs_dir: Path) -> None:
    """``supervisor run --logs`` of a service given ``${HF_TOKEN}``: events, output and the failure on the
    console are redacted."""
    path = tmp_path / "leak.yaml"
    path.write_text(
        "name: leak\nservices:\n  leaky:\n"
        f"    command: ['{{python}}', -c, {LEAK!r}, '${{HF_TOKEN}}', --hf-token, '${{HF_TOKEN}}']\n"
        f"    env: {{OPENAI_KEY: {OPENAI}, DATABASE_URL: 'postgres://app:{DBPW}@127.0.0.1/db'}}\n"
        "    fatal: [FATAL]\n"
        "    ready: {log: never}\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HF_TOKEN": HF, "XDG_STATE_HOME": str(tmp_path / "state")}
    result = subprocess.run(
        [PYTHON, "-m", "supervisor", "run", str(path), "--runs-dir", str(runs_dir), "--logs"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "FATAL: bad token <redacted>" in result.stderr and "FATAL: bad token <redacted>" in result.stdout
    assert_no_secret(result.stdout, "stdout")
    assert_no_secret(result.stderr, "stderr")
    (run_dir,) = runs_dir.iterdir()
    for name in ("manifest.json", "events.jsonl", "summary.json"):
        assert_no_secret((run_dir / name).read_text(), name)


async def test_a_rolling_restart_setting_a_secret_var_records_no_secret(tmp_path: Path, runs_dir: Path) -> None:
    """``restart --rolling --set hf=... --set pw=...`` through the socket, where ``${hf}`` feeds ``HF_TOKEN``
    and a ``--hf-token`` flag and ``${pw}`` a URL password holding ``/`` and ``@``: the ``ControlRequest``
    hides those two values and keeps ``mode`` readable; events, manifest and summary hold neither secret."""
    token, password = "hf_rolledSecret31337", "p@ss/w0rd-rolled"
    path = tmp_path / "roll.yaml"
    path.write_text(
        "name: roll\nvars: {hf: none-yet, pw: none-yet, mode: first}\nservices:\n  w:\n"
        "    command: ['{python}', -u, -c, \"print('up'); import time; time.sleep(3600)\", --mode, '${mode}',"
        " --hf-token, '${hf}']\n"
        "    env: {HF_TOKEN: '${hf}', DATABASE_URL: 'postgres://app:${pw}@127.0.0.1/db'}\n"
        "    replicas: 2\n    ready: {log: up}\n"
    )
    async with sv.launch(sv.load(path), runs_dir=runs_dir) as group:
        assert group.control_socket is not None
        overrides = {"hf": token, "pw": password, "mode": "second"}
        ask = functools.partial(
            request_blocking, group.control_socket, "rolling_restart", service="w", overrides=overrides,
            timeout_seconds=60,
        )  # fmt: skip
        reply = await anyio.to_thread.run_sync(ask)
        assert reply["ok"], reply
        (request,) = [e for e in group.event_history if isinstance(e, sv.ControlRequest)]
        assert request.args["overrides"] == {"hf": REDACTED, "pw": REDACTED, "mode": "second"}
        run_dir = group.run_dir
    events = (run_dir / "events.jsonl").read_text()
    manifest = (run_dir / "manifest.json").read_text()
    summary = (run_dir / "summary.json").read_text()
    for name, text in (("events.jsonl", events), ("manifest.json", manifest), ("summary.json", summary)):
        for secret in (token, password, "ss/w0rd-rolled"):
            assert secret not in text, f"{secret!r} reached {name}"
    assert '"second"' in events and "postgres://app:<redacted>@127.0.0.1/db" in manifest


async def test_the_manifest_hides_a_rolled_replicas_new_secret_while_it_starts(tmp_path: Path, runs_dir: Path) -> None:
    """The records' redactor learns the new spec's secrets before the new replicas start: while a rolled
    replica waits to be ready, the manifest already on disk must not show its new token (which the
    command also passes as a plain argument, hidden only by value)."""
    token, go = "hf_freshSecret4242", tmp_path / "go"
    script = (
        "import os, sys, time\n"
        f"while os.environ['MODE'] == 'new' and not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
        "print('up', flush=True); time.sleep(3600)\n"
    )
    path = tmp_path / "roll.yaml"
    path.write_text(
        "name: roll\nvars: {hf: none-yet, mode: old}\nservices:\n  w:\n"
        f"    command: ['{{python}}', -u, -c, {json.dumps(script)}, --note, '${{hf}}']\n"
        "    env: {HF_TOKEN: '${hf}', MODE: '${mode}'}\n    ready: {log: up}\n"
    )
    async with sv.launch(sv.load(path), runs_dir=runs_dir) as group, anyio.create_task_group() as tg:
        tg.start_soon(functools.partial(group.rolling_restart, "w", overrides={"hf": token, "mode": "new"}))
        await wait_for(group, lambda events: len([e for e in events if isinstance(e, sv.Spawned)]) == 2, timeout=60)
        new_pid = [e for e in group.event_history if isinstance(e, sv.Spawned)][-1].pid
        manifest_path = group.run_dir / "manifest.json"
        # the manifest written for the new replica (else this proves nothing)
        manifest = await anyio.to_thread.run_sync(
            lambda: wait_until(lambda: f'"pid": {new_pid}' in (text := manifest_path.read_text()) and text, 60)
        )
        assert token not in manifest
        go.touch()
    assert token not in (group.run_dir / "manifest.json").read_text()


async def test_a_secret_flag_value_and_a_probe_header_are_hidden_wherever_they_land(runs_dir: Path) -> None:
    """A key given only as ``--api_key KEY`` (no env var holds it) and sent by the readiness probe as
    ``Authorization: Bearer KEY``: the server quoting it in a fatal line, and the probe's header, reach no
    record in clear (the redactor learned only env values before: the quoted line kept the key)."""
    key = "vj-flagOnlySecret4242"
    quote = "import sys; print('FATAL: refused key', sys.argv[2], flush=True); sys.exit(3)"
    ready = sv.Probe(sv.HttpCheck("http://127.0.0.1:1/v1/models", headers={"Authorization": f"Bearer {key}"}))
    server = sv.Service(name="api", command=[PYTHON, "-c", quote, "--api_key", key], fatal=("FATAL",), ready=ready)
    with pytest.raises(sv.ServiceFailed):
        async with sv.launch(sv.Topology(name="hdr", services=[server]), runs_dir=runs_dir):
            pass
    (run_dir,) = runs_dir.iterdir()
    for name in ("manifest.json", "events.jsonl", "summary.json"):
        text = (run_dir / name).read_text()
        assert key not in text, f"the key reached {name}"
    assert "FATAL: refused key <redacted>" in (run_dir / "events.jsonl").read_text()


def test_cli_console_hides_a_key_given_only_as_a_flag(tmp_path: Path, runs_dir: Path) -> None:
    """``--api_key KEY`` written in the command (no env var holds it), quoted back in a fatal line: the
    console hid the flag's value in the command but printed the quoted line with the key in clear."""
    key = "vj-cliSecret777"
    quote = "import sys; print('FATAL: refused key', sys.argv[2], flush=True); sys.exit(3)"
    path = tmp_path / "leak.yaml"
    path.write_text(
        "name: leak\nservices:\n  api:\n"
        f"    command: ['{{python}}', -c, {quote!r}, --api_key, {key}]\n"
        "    fatal: [FATAL]\n    ready: {log: never}\n"
    )
    env = {"PATH": "/usr/bin:/bin", "XDG_STATE_HOME": str(tmp_path / "state"), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [PYTHON, "-m", "supervisor", "run", str(path), "--runs-dir", str(runs_dir), "--logs"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=env,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "FATAL: refused key <redacted>" in result.stderr
    assert key not in result.stdout and key not in result.stderr
