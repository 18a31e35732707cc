"""``supervisor sweep``, ``ab`` and ``report`` end to end: real topologies of stand-ins, a real client, the
rows and the report read back from the sweep's folder."""

from __future__ import annotations

import csv
import itertools
import json
import re
import shutil
import subprocess
from pathlib import Path

from supervisor._host.proctable import marked_processes
from supervisor._records.summary import read_summary

from ..helpers import PYTHON, ROOT, supervisor_cli, wait_until

DEMO = ROOT / "examples" / "sweep_demo.yaml"
CLIENT = ["--", "{python}", str(ROOT / "examples" / "sweep_client.py"), "{frontend.url}", "{trial_dir}"]


def _csv_rows(folder: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((folder / "results.csv").read_text().splitlines()))


def _sweep_dir(runs_dir: Path, stdout: str) -> Path:
    sweep_id = stdout.splitlines()[0]
    return runs_dir / "sweeps" / sweep_id


def test_a_two_arm_abba_sweep_records_four_trials_each_on_a_fresh_topology_and_reports_ratios(runs_dir: Path) -> None:
    done = supervisor_cli(
        "sweep", str(DEMO), "--runs-dir", str(runs_dir), "--vary", "tps=200,400", "--trials", "2", *CLIENT,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    folder = _sweep_dir(runs_dir, done.stdout)
    rows = _csv_rows(folder)
    assert [(r["arm"], r["trial"], r["status"]) for r in rows] == [
        ("tps=200", "1", "ok"), ("tps=400", "2", "ok"), ("tps=400", "3", "ok"), ("tps=200", "4", "ok"),
    ]  # fmt: skip
    assert len({r["run_id"] for r in rows}) == 4
    assert all(float(r["latency_seconds"]) > 0 and r["client_exit"] == "0" for r in rows)
    assert all(r["topovisor_version"] and r["topology_sha256"] and float(r["ready_seconds"]) > 0 for r in rows)
    # stand-ins: no engine package in an env_path, no GPUs
    assert all((r["engine_version"], r["gpu_model"], r["gpu_driver"]) == ("", "", "") for r in rows)
    summaries = [read_summary(runs_dir / r["run_id"]) for r in rows]
    assert all(s.verified_no_leftovers for s in summaries)
    for before, after in itertools.pairwise(summaries):  # each torn down before the next began
        assert before.ended_wall_time is not None and after.started_wall_time is not None
        assert before.ended_wall_time <= after.started_wall_time
    assert all(not marked_processes(r["run_id"]) for r in rows)
    assert "latency_seconds:" in done.stdout and "1.000x" in done.stdout
    # the stand-in decode workers' counters over the window: the client's 3 requests of 16 tokens each
    assert all((r["server_requests"], r["server_generation_tokens"]) == ("3.0", "48.0") for r in rows)
    assert all(r["server_decode_requests"] == "3.0" for r in rows)
    assert (folder / "trials" / "001" / "result.json").is_file()
    for label in ("before", "after"):
        assert (folder / "trials" / "001" / "metrics" / label / "decode.prom").is_file()
    assert (folder / "trials" / "001" / "run" / "summary.json").is_file()
    reported = supervisor_cli("report", folder.name, "--runs-dir", str(runs_dir), "--json")
    assert reported.returncode == 0, reported.stderr
    report = json.loads(reported.stdout)
    baseline, faster = report["figures"]["tokens_per_second"]
    assert baseline["ratio"] == 1.0 and faster["ratio"] > 1.2  # 400 against 200 tokens/s
    assert len(report["rows"]) == 4
    again = supervisor_cli("report", str(folder))
    assert again.returncode == 0 and "tokens_per_second:" in again.stdout


def test_every_bad_input_of_every_arm_is_reported_at_once_and_nothing_starts(runs_dir: Path) -> None:
    done = supervisor_cli(
        "sweep", str(DEMO), "--runs-dir", str(runs_dir), "--vary", "decode=1,many", "--vary", "tps=",
        "--order", "ABC", *CLIENT,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "3 problems" in done.stderr
    for problem in (
        "--vary tps=: no value to vary over",
        "arm decode=many: service 'decode', field 'replicas': expected a whole number",
        "--order ABC: names arm C, and there are 2 arms (A, B)",
    ):
        assert problem in done.stderr
    unused = supervisor_cli("sweep", str(DEMO), "--runs-dir", str(runs_dir), "--vary", "nope=1,2", *CLIENT)
    assert unused.returncode == 2
    assert "arm nope=1: --set nope: the file uses no ${nope}" in unused.stderr
    assert "arm nope=2: --set nope: the file uses no ${nope}" in unused.stderr
    assert not runs_dir.exists()


def test_a_failed_trial_is_recorded_with_why_and_the_sweep_goes_on(runs_dir: Path, tmp_path: Path) -> None:
    topology = tmp_path / "t.yaml"
    topology.write_text(
        "name: t\nvars: {fail: 0}\nservices:\n  app:\n"
        '    command: ["{python}", "-u", "-c", "import sys, time; ${fail} and sys.exit(7); print(\'up\'); time.sleep(600)"]\n'
        "    ready: {log: up, timeout: 60s}\n    stop: {signal: SIGTERM, grace: 5s}\n"
    )
    client = ["--", PYTHON, "-c", "import sys; print('nope', file=sys.stderr); sys.exit(3)"]
    done = supervisor_cli(
        "sweep", str(topology), "--runs-dir", str(runs_dir), "--vary", "fail=1,0", "--order", "ABAB", *client,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    rows = [json.loads(line) for line in (_sweep_dir(runs_dir, done.stdout) / "results.jsonl").read_text().splitlines()]
    assert [(r["trial"], r["status"]) for r in rows] == [(1, "failed"), (2, "failed")]
    assert "app" in rows[0]["error"] and "7" in rows[0]["error"]  # the ServiceFailed text
    assert rows[0]["client_exit"] is None
    assert rows[1]["error"] == "client exited 3: nope" and rows[1]["client_exit"] == 3
    failing = supervisor_cli(
        "sweep", str(topology), "--runs-dir", str(runs_dir), "--vary", "fail=1,0", "--fail-fast", *client,
        timeout=300,
    )  # fmt: skip
    assert failing.returncode == 1
    assert len((_sweep_dir(runs_dir, failing.stdout) / "results.jsonl").read_text().splitlines()) == 1


def test_ab_of_two_files_and_of_one_file_with_a_and_b_sets(runs_dir: Path, tmp_path: Path) -> None:
    shutil.copy(DEMO, tmp_path / "base.yaml")
    (tmp_path / "fast.yaml").write_text(DEMO.read_text().replace("tps: 200", "tps: 400"))
    files = supervisor_cli(
        "ab", str(tmp_path / "base.yaml"), str(tmp_path / "fast.yaml"), "--runs-dir", str(runs_dir), *CLIENT,
        timeout=300,
    )  # fmt: skip
    assert files.returncode == 0, files.stderr
    rows = _csv_rows(_sweep_dir(runs_dir, files.stdout))
    assert [r["arm"] for r in rows] == ["base", "fast"]
    sets = supervisor_cli("ab", str(DEMO), "--a", "decode=1", "--b", "decode=2", "--runs-dir", str(runs_dir), *CLIENT)
    assert sets.returncode == 0, sets.stderr
    rows = _csv_rows(_sweep_dir(runs_dir, sets.stdout))
    assert [(r["arm"], r["decode"]) for r in rows] == [("decode=1", "1"), ("decode=2", "2")]


def test_resume_after_the_sweep_was_killed_in_trial_3_runs_trials_3_and_4_only(runs_dir: Path, tmp_path: Path) -> None:
    """The client of trial 3 SIGKILLs the sweep (its parent) once; the watchdog tears that trial's run down,
    and ``--resume`` redoes trial 3 and runs trial 4: four rows, none twice."""
    cue, calls = tmp_path / "kill-once", tmp_path / "calls"
    cue.touch()
    client = tmp_path / "client.py"
    client.write_text(
        "import os, signal, sys\nfrom pathlib import Path\n"
        "trial = Path(sys.argv[1]); cue = Path(sys.argv[2])\n"
        "with open(sys.argv[3], 'a') as f: print(trial.name, os.environ['TOPOVISOR_RUN_ID'], file=f)\n"
        "if trial.name == '003' and cue.exists():\n"
        "    cue.unlink(); os.kill(os.getppid(), signal.SIGKILL); sys.exit(9)\n"
        "(trial / 'result.json').write_text('{\"figure\": 1}')\n"
    )
    command = ["--", PYTHON, str(client), "{trial_dir}", str(cue), str(calls)]
    killed = supervisor_cli(
        "sweep", str(DEMO), "--runs-dir", str(runs_dir), "--vary", "tps=200,400", "--trials", "2", *command,
        timeout=300,
    )  # fmt: skip
    assert killed.returncode == -9, killed.stderr
    folder = _sweep_dir(runs_dir, killed.stdout)
    assert [json.loads(line)["trial"] for line in (folder / "results.jsonl").read_text().splitlines()] == [1, 2]
    orphan = calls.read_text().splitlines()[-1].split()[1]
    (died,) = json.loads(supervisor_cli("ps", "--sweeps", "--json").stdout)
    assert (died["sweep_id"], died["status"], died["trial"], died["done"]) == (folder.name, "died", 3, 2)
    assert f"died: supervisor sweep --resume {folder.name}" in supervisor_cli("ps", "--sweeps").stdout
    wait_until(lambda: not marked_processes(orphan), timeout=120, what="the watchdog to stop the killed trial's run")
    resumed = supervisor_cli("sweep", "--resume", folder.name, "--runs-dir", str(runs_dir), timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.splitlines()[0] == folder.name
    assert supervisor_cli("ps", "--sweeps", "--json").stdout.strip() == "[]"  # resumed and ended: no entry
    assert [line.split()[0] for line in calls.read_text().splitlines()] == ["001", "002", "003", "003", "004"]
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    assert [r["trial"] for r in rows] == [1, 2, 3, 4]
    assert orphan not in {r["run_id"] for r in rows} and len({r["run_id"] for r in rows}) == 4
    assert len(_csv_rows(folder)) == 4
    again = supervisor_cli("sweep", "--resume", folder.name, "--runs-dir", str(runs_dir))
    assert again.returncode == 0 and len(calls.read_text().splitlines()) == 5  # nothing left to run


def test_ctrl_c_ends_the_current_trial_cleanly_and_leaves_the_sweep_resumable(runs_dir: Path, tmp_path: Path) -> None:
    """The client of trial 2 sends SIGINT to the sweep (its parent) once, as a terminal's Ctrl-C would:
    that trial's topology is torn down at once (verified), no row is written for it, exit 130."""
    cue = tmp_path / "interrupt-once"
    cue.touch()
    client = tmp_path / "client.py"
    client.write_text(
        "import os, signal, sys, time\nfrom pathlib import Path\n"
        "trial = Path(sys.argv[1]); cue = Path(sys.argv[2])\n"
        "if trial.name == '002' and cue.exists():\n"
        "    cue.unlink(); os.kill(os.getppid(), signal.SIGINT); time.sleep(120); sys.exit(5)\n"
    )
    command = ["--", PYTHON, str(client), "{trial_dir}", str(cue)]
    stopped = supervisor_cli(
        "sweep", str(DEMO), "--runs-dir", str(runs_dir), "--vary", "tps=200,400", *command, timeout=300
    )
    assert stopped.returncode == 130, stopped.stderr
    folder = _sweep_dir(runs_dir, stopped.stdout)
    assert f"supervisor sweep --resume {folder.name}" in stopped.stderr
    assert [r["trial"] for r in _csv_rows(folder)] == ["1"]
    interrupted = (folder / "trials" / "002" / "run").resolve()
    summary = read_summary(interrupted)
    assert summary.outcome == "stopped" and summary.verified_no_leftovers
    resumed = supervisor_cli("sweep", "--resume", folder.name, "--runs-dir", str(runs_dir), timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert [r["trial"] for r in _csv_rows(folder)] == ["1", "2"]


WARM = (
    "import json, sys, urllib.request as u; body = json.dumps({'messages': [{'role': 'user', 'content': 'hi'}], 'max_tokens': 4}).encode()\n"
    "for _ in range(2): u.urlopen(u.Request(sys.argv[1] + '/v1/chat/completions', data=body, "
    "headers={'Content-Type': 'application/json'})).read()\nprint('warm')"
)


def test_the_warm_up_runs_once_all_are_ready_and_its_requests_stay_out_of_the_measured_window(
    runs_dir: Path,
) -> None:
    done = supervisor_cli(
        "sweep", str(DEMO), "--runs-dir", str(runs_dir), "--vary", "tps=400", "--warmup",
        f"'{{python}}' -c \"{WARM}\" '{{frontend.url}}'", *CLIENT, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    folder = _sweep_dir(runs_dir, done.stdout)
    (row,) = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    assert row["warmup_exit"] == 0 and row["warmup_seconds"] > 0
    trial = folder / "trials" / "001"
    assert (trial / "warmup.stdout").read_text() == "warm\n"
    assert row["server_requests"] == 3.0  # the client's 3; the warm-up's 2 came before the window
    assert "standin_requests_total" in (trial / "metrics" / "before" / "decode.prom").read_text()
    before = (trial / "metrics" / "before" / "decode.prom").read_text()
    assert any(line.startswith("standin_requests_total") and line.endswith(" 2") for line in before.splitlines())
    log = (trial / "run" / "logs" / "decode.log").read_text()
    assert log.index("topovisor mark: sweep") > 0  # the window's marks are in the replicas' logs
    assert json.loads((folder / "sweep.json").read_text())["warmup"][0] == "{python}"


def test_a_failed_warm_up_fails_its_trial_without_running_the_client_and_a_bad_one_starts_nothing(
    runs_dir: Path,
) -> None:
    bad = supervisor_cli(
        "sweep", str(DEMO), "--runs-dir", str(runs_dir), "--vary", "tps=200,400", "--warmup", "echo {frontend.nope}",
        *CLIENT,
    )  # fmt: skip
    assert bad.returncode == 2, bad.stderr
    assert "arm tps=200: --warmup echo {frontend.nope}: unknown template {frontend.nope}" in bad.stderr
    assert "arm tps=400: --warmup echo" in bad.stderr and not runs_dir.exists()
    unbalanced = supervisor_cli("sweep", str(DEMO), "--vary", "tps=200", "--warmup", "echo 'open", *CLIENT)
    assert unbalanced.returncode == 2 and "--warmup" in unbalanced.stderr
    failing = supervisor_cli(
        "sweep", str(DEMO), "--runs-dir", str(runs_dir), "--vary", "tps=200", "--warmup",
        "'{python}' -c 'import sys; print(\"cold\", file=sys.stderr); sys.exit(4)'", *CLIENT, timeout=300,
    )  # fmt: skip
    assert failing.returncode == 1, failing.stderr
    folder = _sweep_dir(runs_dir, failing.stdout)
    (row,) = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    assert row["status"] == "failed" and row["error"] == "warm-up exited 4: cold"
    assert row["warmup_exit"] == 4 and row["client_exit"] is None
    assert not (folder / "trials" / "001" / "client.stdout").exists()
    assert read_summary(runs_dir / row["run_id"]).verified_no_leftovers


def test_a_running_sweep_is_listed_by_ps_with_its_trial_arm_and_time_left_and_its_progress_is_on_stderr(
    runs_dir: Path, tmp_path: Path
) -> None:
    """The client of trial 2 waits for a file the test writes once it has read ``ps``."""
    go = tmp_path / "go"
    client = tmp_path / "client.py"
    client.write_text(
        "import sys, time\nfrom pathlib import Path\ntrial, go = Path(sys.argv[1]), Path(sys.argv[2])\n"
        "deadline = time.monotonic() + 120\n"
        "while trial.name == '002' and not go.exists() and time.monotonic() < deadline: time.sleep(0.05)\n"
    )
    with subprocess.Popen(
        [PYTHON, "-m", "supervisor", "sweep", str(DEMO), "--runs-dir", str(runs_dir), "--vary", "tps=200,400",
         "--", PYTHON, str(client), "{trial_dir}", str(go)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    ) as sweep:  # fmt: skip
        try:
            assert sweep.stdout is not None and sweep.stderr is not None
            sweep_id = sweep.stdout.readline().strip()
            heard = [sweep.stderr.readline() for _ in range(3)]
            assert heard[0].rstrip().endswith("trial 1 of 2 (arm tps=200)"), heard
            assert re.search(r"trial 1 of 2 \(arm tps=200\): run \S+ ok$", heard[1].rstrip()), heard
            assert re.search(r"trial 2 of 2 \(arm tps=400\), about \d+s left$", heard[2].rstrip()), heard
            (listed,) = json.loads(supervisor_cli("ps", "--sweeps", "--json").stdout)
            assert (listed["sweep_id"], listed["status"], listed["pid"]) == (sweep_id, "running", sweep.pid)
            assert (listed["trial"], listed["planned"], listed["done"], listed["arm"]) == (2, 2, 1, "tps=400")
            assert listed["seconds_left"] >= 0
            text = supervisor_cli("ps").stdout
            assert re.search(rf"{sweep_id}\s+2 of 2\s+tps=400\s+about \d+s left\s+running \(pid {sweep.pid}\)", text), (
                text
            )
            runs = json.loads(supervisor_cli("ps", "--json").stdout)
            assert isinstance(runs, list) and all("run_id" in r for r in runs) and len(runs) == 1  # trial 2's run
            go.touch()
            assert sweep.wait(timeout=120) == 0, sweep.stderr.read()
        finally:
            go.touch()
            sweep.kill()
            sweep.wait()
    assert supervisor_cli("ps", "--sweeps").stdout == "no sweeps\n"
