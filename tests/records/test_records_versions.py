"""Records that last across releases: the records of a real run, kept as files (``tests/fixtures/records_v<N>``),
stay readable by every later topovisor, and a record of a newer one is refused with a message that says who
reads it, never a traceback.

The fixture of version N is the run dir of ``tests/fixtures/records_v<N>/records.yaml`` run once by the
topovisor of that version (``supervisor run records.yaml -- python3 -c "print('client done')"``), its
paths scrubbed: the run dir is ``@RUN_DIR@`` and the interpreter ``python3``. Add one for each new
``RECORDS_VERSION``; never edit an old one.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

import supervisor as sv
from supervisor._events import event_from_json
from supervisor._records.died import summary_of_dead_run
from supervisor._records.eventfile import read_events
from supervisor._records.paths import default_runs_dir
from supervisor._records.record import read_manifest
from supervisor._records.version import RECORDS_VERSION

from ..helpers import supervisor_cli

FIXTURES = Path(__file__).parents[1] / "fixtures"
VERSIONS = sorted(FIXTURES.glob("records_v*"), key=lambda path: int(path.name.removeprefix("records_v")))
NEWER = RECORDS_VERSION + 1
REFUSED = f"was recorded by topovisor with records version {NEWER} ({{what}}); this topovisor reads version"
MAX_EVENT_BYTES = 1 << 20


def install(fixture: Path) -> Path:
    """The fixture's run dir copied where ``supervisor ps --all`` looks, its paths made this machine's."""
    (source,) = [path for path in fixture.iterdir() if path.is_dir()]
    run_dir = default_runs_dir() / source.name
    shutil.copytree(source, run_dir)
    manifest = run_dir / "manifest.json"
    manifest.write_text(manifest.read_text().replace("@RUN_DIR@", str(run_dir)))
    return run_dir


def rewrite(path: Path, change: dict[str, object], *, line: int | None = None) -> None:
    """``path`` (a JSON record, or one line of events.jsonl) with ``change`` applied."""
    if line is None:
        path.write_text(json.dumps({**json.loads(path.read_text()), **change}, indent=2))
        return
    lines = path.read_text().splitlines()
    lines[line] = json.dumps({**json.loads(lines[line]), **change})
    path.write_text("\n".join(lines) + "\n")


def test_there_is_a_fixture_of_the_records_this_version_writes() -> None:
    """Bumping RECORDS_VERSION without keeping the new version's files fails here."""
    assert [path.name for path in VERSIONS][-1] == f"records_v{RECORDS_VERSION}"


@pytest.mark.parametrize("fixture", VERSIONS, ids=lambda path: path.name)
def test_the_records_of_every_version_read_with_the_library(fixture: Path) -> None:
    """read_summary, the manifest reader and the events reader take a finished run of every version."""
    run_dir = install(fixture)
    summary = sv.read_summary(run_dir)
    assert summary.outcome == "stopped" and summary.verified_no_leftovers
    assert list(summary.replicas) == ["kv", "worker", "warmup"]
    assert [link.service for link in summary.critical_chain] == ["kv", "worker", "warmup"]
    assert summary.ready_seconds is not None and summary.replicas["warmup"].state == "completed"
    manifest = read_manifest(run_dir)
    assert manifest is not None and manifest.phase == "stopped" and manifest.run_id == run_dir.name
    assert manifest.services["worker"].depends_on == {"kv": "ready"}
    assert manifest.services["kv"].replicas[0].env == {"API_TOKEN": "<redacted>"}
    lines = list(read_events(run_dir / "events.jsonl", max_bytes=MAX_EVENT_BYTES))
    events = [event_from_json(line) for line in lines]
    assert lines and all(events), [line for line, event in zip(lines, events, strict=True) if event is None]
    assert {type(event) for event in events} >= {sv.Spawned, sv.Ready, sv.Completed, sv.Stopped}
    assert summary_of_dead_run(run_dir).replicas["kv"].state == "stopped"  # what gc reads of a dead run


@pytest.mark.parametrize("fixture", VERSIONS, ids=lambda path: path.name)
def test_the_records_of_every_version_read_with_the_cli(fixture: Path) -> None:
    """``supervisor ps --all``, ``logs`` and ``status`` (by id and by directory) on a finished run."""
    run_dir = install(fixture)
    run_id = run_dir.name
    listed = supervisor_cli("ps", "--all", "--json")
    assert listed.returncode == 0, listed.stderr
    (view,) = json.loads(listed.stdout)
    assert (view["run_id"], view["status"], view["outcome"]) == (run_id, "stopped", "stopped")
    assert [r["name"] for s in view["services"].values() for r in s["replicas"]] == ["kv", "worker", "warmup"]
    table = supervisor_cli("ps", "--all")
    assert table.returncode == 0 and run_id in table.stdout and "worker" in table.stdout
    logs = supervisor_cli("logs", run_id, "kv")
    assert logs.returncode == 0, logs.stderr
    assert "Uvicorn running" in logs.stdout
    assert "warm" in supervisor_cli("logs", str(run_dir), "warmup").stdout
    status = supervisor_cli("status", str(run_dir))
    assert status.returncode == 1 and f"run {run_id} is not running (it was stopped)" in status.stderr
    assert "Traceback" not in status.stderr


def test_records_written_before_versioning_read_as_version_1() -> None:
    """Files without a version (as written before it was recorded) are read as version 1."""
    run_dir = install(FIXTURES / "records_v1")
    for name in ("manifest.json", "summary.json"):
        data = json.loads((run_dir / name).read_text())
        data.pop("records_version", None)
        (run_dir / name).write_text(json.dumps(data))
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    (run_dir / "events.jsonl").write_text(
        "".join(json.dumps({k: v for k, v in e.items() if k != "v"}) + "\n" for e in events)
    )
    assert sv.read_summary(run_dir).records_version == 1
    manifest = read_manifest(run_dir)
    assert manifest is not None and manifest.records_version == 1 and manifest.services
    assert len(list(read_events(run_dir / "events.jsonl", max_bytes=MAX_EVENT_BYTES))) == len(events)
    listed = supervisor_cli("ps", "--all", "--json")
    assert json.loads(listed.stdout)[0]["status"] == "stopped"


def test_a_manifest_of_a_newer_version_is_refused_clearly() -> None:
    """``ps`` lists the run and says why it cannot read it; ``logs``, ``stop`` and ``status`` refuse it
    in one line (exit 1) naming the run and both versions; nothing is stopped from a half-read record."""
    run_dir = install(VERSIONS[-1])
    run_id = run_dir.name
    rewrite(run_dir / "manifest.json", {"records_version": NEWER})
    message = f"run {run_id} " + REFUSED.format(what="manifest.json")
    listed = supervisor_cli("ps", "--all")
    assert listed.returncode == 0 and "unreadable" in listed.stdout and message in listed.stdout, listed.stdout
    (view,) = json.loads(supervisor_cli("ps", "--all", "--json").stdout)
    assert view["status"] == "unreadable" and message in view["unreadable"]
    for command in (["logs", run_id], ["stop", run_id], ["status", str(run_dir)], ["logs", str(run_dir)]):
        refused = supervisor_cli(*command)
        assert refused.returncode == 1, (command, refused.stdout, refused.stderr)
        assert message in refused.stderr and "use that version's `supervisor` to read it" in refused.stderr
        assert "Traceback" not in refused.stderr and len(refused.stderr.splitlines()) == 1, refused.stderr
    with pytest.raises(sv.IncompatibleVersion, match=r"manifest\.json"):
        read_manifest(run_dir)


def test_a_summary_of_a_newer_version_is_refused_clearly() -> None:
    """read_summary raises IncompatibleVersion (a SupervisorError) with the message, not a cattrs error."""
    run_dir = install(VERSIONS[-1])
    rewrite(run_dir / "summary.json", {"records_version": NEWER})
    with pytest.raises(sv.IncompatibleVersion) as raised:
        sv.read_summary(run_dir)
    assert str(raised.value).startswith(f"run {run_dir.name} " + REFUSED.format(what="summary.json"))


def test_events_of_a_newer_version_are_refused_and_a_newer_line_later_is_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A file begun by a newer topovisor is refused (the reader and the dead-run summary that gc writes);
    one line a newer ``supervisor stop`` appended to an older run's file is skipped, with a warning."""
    run_dir = install(VERSIONS[-1])
    events = run_dir / "events.jsonl"
    total = len(events.read_text().splitlines())
    rewrite(events, {"v": NEWER}, line=-1)
    with caplog.at_level(logging.WARNING, logger="supervisor.records"):
        kept = list(read_events(events, max_bytes=MAX_EVENT_BYTES))
    assert len(kept) == total - 1
    assert f"skipped line {total}: written by a newer topovisor" in caplog.text
    rewrite(events, {"v": NEWER}, line=0)
    message = f"run {run_dir.name} " + REFUSED.format(what="events.jsonl, line 1")
    with pytest.raises(sv.IncompatibleVersion, match="use that version's `supervisor`") as raised:
        list(read_events(events, max_bytes=MAX_EVENT_BYTES))
    assert str(raised.value).startswith(message)
    with pytest.raises(sv.IncompatibleVersion):
        summary_of_dead_run(run_dir)
