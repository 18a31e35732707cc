"""``metrics: URL`` and ``group.snapshot_metrics(label)``: every running replica's Prometheus endpoint saved
under ``<run_dir>/metrics/<label>/``, concurrently, bounded, one failing endpoint recorded and never raised;
the CLI takes ``ready`` and ``final``. Real stand-in servers throughout."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

import supervisor as sv

from ..cli.test_cli import ROOT, supervisor
from ..helpers import PYTHON

METRICS = "http://127.0.0.1:{port}/metrics"
# accepts connections on argv[1] and never answers: a hung metrics endpoint
SILENT = (
    "import socket, sys, time\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(16)\n"
    "print('up', flush=True); conns = []\n"
    "deadline = time.monotonic() + 120\n"
    "while time.monotonic() < deadline: conns.append(s.accept()[0])\n"
)
UP = "import time; print('up', flush=True); time.sleep(120)"


def _kv(replicas: int = 1, metrics: str | None = METRICS) -> sv.Service:
    return sv.Service(
        name="kv",
        command=[PYTHON, "-m", "standins", "kv", "--port", "{port}"],
        ports=["port"],
        replicas=replicas,
        ready=sv.HttpCheck("http://127.0.0.1:{port}/health"),
        metrics=metrics,
        env={"PYTHONPATH": str(ROOT)},
    )


def _value(text: str, name: str) -> float:
    match = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
    assert match, (name, text)
    return float(match.group(1))


def test_yaml_metrics_is_templated_per_replica(tmp_path: Path) -> None:
    """``metrics:`` takes templates like a probe URL: each replica gets its own port filled in."""
    path = tmp_path / "t.yaml"
    path.write_text(
        "name: t\nservices:\n"
        "  web: {command: [sleep, '1'], ports: [port], replicas: 2, metrics: 'http://127.0.0.1:{port}/metrics'}\n"
        "  job: {command: [sleep, '1']}\n"
    )
    plan = sv.make_plan(sv.load(path), runs_dir=tmp_path / "runs")
    web = plan.service("web").replicas
    assert [r.metrics for r in web] == [f"http://127.0.0.1:{r.port}/metrics" for r in web]
    assert web[0].port != web[1].port
    assert plan.service("job").replicas[0].metrics is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("'ftp://127.0.0.1:{port}/metrics'", "service 'web', field 'metrics': not an http(s) URL with a host"),
        ("'http://127.0.0.1:{prot}/metrics'", "service 'web', field 'metrics': unknown template {prot}"),
        ("'http://127.0.0.1:99999/metrics'", "service 'web', field 'metrics': not a URL"),
        ("[a, b]", "service 'web', field 'metrics'"),
    ],
)
def test_a_bad_metrics_url_is_a_config_error_before_anything_starts(tmp_path: Path, value: str, expected: str) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(f"name: t\nservices:\n  web: {{command: [sleep, '1'], ports: [port], metrics: {value}}}\n")
    with pytest.raises(sv.ConfigError) as info:
        sv.make_plan(sv.load(path), runs_dir=tmp_path / "runs")
    assert expected in str(info.value) and str(path) in str(info.value)


@pytest.mark.anyio
async def test_snapshot_saves_every_running_endpoint_and_records_failures(runs_dir: Path) -> None:
    """Two kv replicas are saved as ``kv.0.prom``/``kv.1.prom`` with the index; a refused endpoint and
    a hung one are recorded with their errors (the hung one within the timeout, the others not held up by
    it); a replica without ``metrics:`` and a stopped one are left out; a label is taken once."""
    services = [
        _kv(replicas=3),
        # nobody listens on its port
        sv.Service(
            name="refused", command=[PYTHON, "-c", UP], ports=["port"], ready=sv.LogCheck("up"), metrics=METRICS
        ),
        sv.Service(
            name="hung",
            command=[PYTHON, "-c", SILENT, "{port}"],
            ports=["port"],
            ready=sv.LogCheck("up"),
            metrics=METRICS,
        ),
        sv.Service(name="plain", command=[PYTHON, "-c", UP], ready=sv.LogCheck("up")),
    ]
    async with sv.launch(sv.Topology(name="metrics", services=services), runs_dir=runs_dir) as group:
        await group.stop("kv.2")
        started = time.monotonic()
        snapshot = await group.snapshot_metrics("ready", timeout_seconds=1.5)
        elapsed = time.monotonic() - started
        with pytest.raises(ValueError, match="already used"):
            await group.snapshot_metrics("ready")
        with pytest.raises(ValueError, match="names a directory"):
            await group.snapshot_metrics("../escape")
        run_dir = group.run_dir
    assert 1.4 < elapsed < 10, elapsed  # the hung endpoint is waited for up to the timeout, not longer
    directory = run_dir / "metrics" / "ready"
    assert snapshot.directory == directory and snapshot.label == "ready"
    by_name = {e.replica: e for e in snapshot.endpoints}
    assert sorted(by_name) == ["hung", "kv.0", "kv.1", "refused"]
    for name in ("kv.0", "kv.1"):
        endpoint = by_name[name]
        assert endpoint.ok and endpoint.status == 200 and endpoint.state == "ready", endpoint
        assert endpoint.path == directory / f"{name}.prom"
        text = endpoint.path.read_text()
        assert endpoint.size_bytes == len(text.encode()) and _value(text, "standin_ready") == 1.0
        assert endpoint.seconds < 1.5
    assert by_name["hung"].error == "no complete answer within 1.5s" and by_name["hung"].path is None
    assert by_name["refused"].error is not None and "Connect" in by_name["refused"].error
    assert by_name["refused"].status is None
    assert sorted(p.name for p in directory.iterdir()) == ["index.json", "kv.0.prom", "kv.1.prom"]
    index = json.loads((directory / "index.json").read_text())
    assert index == snapshot.to_json()
    assert [e["replica"] for e in index["endpoints"]] == ["kv.0", "kv.1", "refused", "hung"]  # plan order
    assert index["endpoints"][0]["file"] == "kv.0.prom" and index["endpoints"][3]["file"] is None
    assert snapshot.failed == [by_name["refused"], by_name["hung"]]


@pytest.mark.anyio
async def test_a_password_in_the_metrics_url_stays_out_of_the_index(runs_dir: Path) -> None:
    """``metrics: http://u:PASS@127.0.0.1:{port}/metrics``: the endpoint is saved, and ``index.json`` names
    it with the password redacted (the caller's own snapshot keeps the URL it can fetch again)."""
    secret = "metricsPw-s3cret"
    service = _kv(metrics=f"http://scraper:{secret}@127.0.0.1:{{port}}/metrics")
    async with sv.launch(sv.Topology(name="metrics", services=[service]), runs_dir=runs_dir) as group:
        snapshot = await group.snapshot_metrics("ready")
        port = group.replica("kv").ports["port"]
    (endpoint,) = snapshot.endpoints
    assert endpoint.ok and endpoint.url == f"http://scraper:{secret}@127.0.0.1:{port}/metrics", endpoint
    text = (snapshot.directory / "index.json").read_text()
    assert secret not in text, text
    (recorded,) = json.loads(text)["endpoints"]
    assert recorded["url"] == f"http://scraper:<redacted>@127.0.0.1:{port}/metrics"


def test_cli_snapshots_at_ready_and_before_teardown(tmp_path: Path, runs_dir: Path) -> None:
    """``supervisor run FILE -- CMD``: ``metrics/ready`` is taken before CMD starts and ``metrics/final``
    after it ended, before the teardown: CMD's requests show in ``final`` only."""
    path = tmp_path / "t.yaml"
    path.write_text(
        "name: t\nservices:\n"
        "  kv:\n"
        "    command: ['{python}', -m, standins, kv, --port, '{port}']\n"
        "    ports: [port]\n"
        "    ready: {http: 'http://127.0.0.1:{port}/health'}\n"
        "    metrics: 'http://127.0.0.1:{port}/metrics'\n"
    )
    client = (
        "import os, urllib.request\n"
        "for _ in range(3): urllib.request.urlopen(os.environ['TOPOVISOR_KV_URL'] + '/v1/kv').read()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = supervisor("run", str(path), "--runs-dir", str(runs_dir), "--", PYTHON, "-c", client, env=env)
    assert result.returncode == 0, result.stderr
    assert "metrics 'ready': 1/1 endpoints saved" in result.stderr
    assert "metrics 'final': 1/1 endpoints saved" in result.stderr
    (run_dir,) = runs_dir.iterdir()
    ready = (run_dir / "metrics" / "ready" / "kv.prom").read_text()
    final = (run_dir / "metrics" / "final" / "kv.prom").read_text()
    assert _value(final, "standin_requests_total") - _value(ready, "standin_requests_total") == 3
    for label in ("ready", "final"):
        index = json.loads((run_dir / "metrics" / label / "index.json").read_text())
        assert index["label"] == label and [e["status"] for e in index["endpoints"]] == [200]


def test_cli_without_metrics_writes_no_snapshot(tmp_path: Path, runs_dir: Path) -> None:
    """No service declares ``metrics:``: no ``metrics/`` directory and no line about it."""
    path = tmp_path / "t.yaml"
    path.write_text("name: t\nservices:\n  a: {command: ['{python}', -c, 'import time; time.sleep(60)']}\n")
    result = supervisor("run", str(path), "--runs-dir", str(runs_dir), "--", PYTHON, "-c", "pass")
    assert result.returncode == 0, result.stderr
    (run_dir,) = runs_dir.iterdir()
    assert not (run_dir / "metrics").exists() and "metrics '" not in result.stderr


def test_launch_sync_snapshot(runs_dir: Path) -> None:
    """The sync group snapshots too, from plain code."""
    with sv.launch_sync(sv.Topology(name="sync-metrics", services=[_kv()]), runs_dir=runs_dir) as group:
        snapshot = group.snapshot_metrics("mid-run")
        assert [e.replica for e in snapshot.endpoints] == ["kv"] and snapshot.endpoints[0].ok
        assert (group.run_dir / "metrics" / "mid-run" / "kv.prom").is_file()


def test_detached_run_has_its_ready_snapshot_on_return_and_final_after_stop(tmp_path: Path, runs_dir: Path) -> None:
    """``run --detach`` returns after the ``ready`` snapshot is on disk; ``supervisor stop`` (an orderly
    teardown) lets the run take ``final`` while its services still answer."""
    path = tmp_path / "t.yaml"
    path.write_text(
        "name: t\nservices:\n"
        "  kv:\n"
        "    command: ['{python}', -m, standins, kv, --port, '{port}']\n"
        "    ports: [port]\n"
        "    ready: {http: 'http://127.0.0.1:{port}/health'}\n"
        "    metrics: 'http://127.0.0.1:{port}/metrics'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = supervisor("run", "--detach", str(path), "--runs-dir", str(runs_dir), env=env)
    assert started.returncode == 0, started.stderr
    run_dir = runs_dir / started.stdout.strip()
    try:
        ready = json.loads((run_dir / "metrics" / "ready" / "index.json").read_text())
        assert [e["status"] for e in ready["endpoints"]] == [200]
    finally:
        stopped = supervisor("stop", run_dir.name, env=env)
    assert stopped.returncode == 0, stopped.stderr
    final = json.loads((run_dir / "metrics" / "final" / "index.json").read_text())
    assert [e["status"] for e in final["endpoints"]] == [200], final
