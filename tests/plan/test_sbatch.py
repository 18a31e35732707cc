"""``supervisor sbatch``: the batch script's text, that bash accepts it, and that no secret is in it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor._cli.main import main
from supervisor._plan.placement import placeholder_nodes
from supervisor._plan.plan import make_plan
from supervisor._plan.sbatch import batch_script
from supervisor._spec.load import topology_from_text

TOPOLOGY = """
name: demo
vars: {model: tiny, HF_TOKEN: ""}
cluster: {slurm: {nodes: 4, partition: gpu, account: lab, time: 2h, extra: [--exclusive, --comment, "two words"]}}
services:
  etcd: {command: [sleep, "100"], ports: [port], placement: {node: 0}, env: {A: b}, stop: {grace: 30s}}
  worker: {command: [sleep, "100", "${model}"], replicas: 2, gpus: 4, env: {HF_TOKEN: "${HF_TOKEN}"}}
  decode: {command: [sleep, "100"], placement: {nodes: 2}, gpus: 8}
"""


def sbatch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str, text: str = TOPOLOGY
) -> tuple[int, str, str]:
    path = tmp_path / "t.yaml"
    path.write_text(text)
    code = main(["sbatch", str(path), *args])
    out, err = capsys.readouterr()
    return code, out, err


def sbatch_lines(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith("#SBATCH")]


def bash_accepts(script: str, tmp_path: Path) -> None:
    path = tmp_path / "job.sh"
    path.write_text(script)
    done = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_the_script_allocates_what_the_file_asks_for(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, script, _ = sbatch(tmp_path, capsys)
    assert code == 0
    assert script.startswith("#!/bin/bash\n")
    assert sbatch_lines(script) == [
        "#SBATCH --job-name=topovisor-demo",
        "#SBATCH --nodes=4",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=lab",
        "#SBATCH --time=2:00:00",
        "#SBATCH --gpus-per-node=8",  # decode's 8 on each of nodes 2 and 3; the workers' 4 on 0 and 1
        "#SBATCH --signal=B:TERM@120",  # the longest grace (30 s) + the margin: SIGTERM before the limit
        "#SBATCH --no-kill",  # a node failure must not end the allocation: its replicas move elsewhere
        '#SBATCH --exclusive --comment "two words"',
    ]
    run_line = script.splitlines()[-1]
    path = tmp_path / "t.yaml"
    assert run_line == f"exec {sys.executable} -m supervisor run {path} --slurm --set cluster.slurm.nodes=4"
    assert f"cd {os.getcwd()}" in script.splitlines()
    bash_accepts(script, tmp_path)


def test_flags_and_sets_reach_the_allocation_and_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--nodes", "5", "--partition", "debug", "--time", "90m", "--qos", "high", "--constraint", "a100&ib"]
    code, script, _ = sbatch(tmp_path, capsys, *args, "--set", "model=big one", "--runs-dir", str(tmp_path / "runs"))
    assert code == 0
    lines = sbatch_lines(script)
    assert "#SBATCH --nodes=5" in lines and "#SBATCH --partition=debug" in lines
    assert "#SBATCH --time=1:30:00" in lines and "#SBATCH --qos=high" in lines
    assert "#SBATCH --constraint=a100&ib" in lines
    run_line = script.splitlines()[-1]
    assert run_line.endswith(f"--set 'model=big one' --set cluster.slurm.nodes=5 --runs-dir {tmp_path / 'runs'}")
    bash_accepts(script, tmp_path)


def test_a_file_without_a_cluster_gets_one_sized_for_its_placements(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = TOPOLOGY.replace(TOPOLOGY.split("\n")[3], "")
    assert "cluster" not in text
    code, script, _ = sbatch(tmp_path, capsys, text=text)
    assert code == 0
    assert "#SBATCH --nodes=2" in sbatch_lines(script)  # decode spans 2 nodes
    assert "--slurm --set cluster.slurm.nodes=2" in script


def test_the_command_after_dashes_is_carried_with_its_templates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, script, _ = sbatch(tmp_path, capsys, "--", "curl", "-s", "{etcd.url}/health")
    assert code == 0
    assert script.splitlines()[-1].endswith("--set cluster.slurm.nodes=4 -- curl -s '{etcd.url}/health'")
    bash_accepts(script, tmp_path)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--time", "30"], "--time: '30' is ambiguous"),
        (["--partition", "a b"], "field 'cluster.slurm.partition': expected one word"),
        (
            ["--nodes", "1"],
            "service 'decode', field 'placement.nodes': a replica on 2 nodes needs 2, the allocation has 1",
        ),
        (["--set", "modl=x"], "--set modl: the file uses no ${modl} (did you mean 'model'?)"),
        (["--", "curl", "{etcd.urll}"], "unknown template {etcd.urll}"),
    ],
)
def test_bad_input_is_reported_before_any_script(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    code, out, err = sbatch(tmp_path, capsys, *args)
    assert (code, out) == (2, "")
    assert expected in err


def test_nodes_must_be_a_positive_number(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        sbatch(tmp_path, capsys, "--nodes", "0")
    assert caught.value.code == 2
    assert "argument --nodes/-N: must be from 1 to 100000, got 0" in capsys.readouterr().err


def test_output_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "job.sbatch"
    code, out, _ = sbatch(tmp_path, capsys, "-o", str(target))
    assert (code, out) == (0, "")
    assert sbatch_lines(target.read_text())[0] == "#SBATCH --job-name=topovisor-demo"


SECRET = "hf_abcdefghijklmnop"


def test_secrets_never_land_in_the_script(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A secret-named --set, a value holding a secret of the caller's environment, a URL password: none in
    clear; each is read from the job's environment, with a guard that names it."""
    monkeypatch.setenv("MY_API_KEY", "k3y-from-the-environment")
    text = TOPOLOGY.replace("vars: {", "vars: {url: x, ").replace('"${model}"]', '"${model}", "${url}"]')
    args = [
        "--set",
        f"HF_TOKEN={SECRET}",
        "--set",
        "url=http://user:pa55word@db:5432",
        "--set",
        "model=k3y-from-the-environment",
    ]
    code, script, err = sbatch(tmp_path, capsys, *args, "--set", "services.etcd.env.DB_PASSWORD=s3cr3t!!", text=text)
    assert code == 0
    for secret in (SECRET, "pa55word", "k3y-from-the-environment", "s3cr3t!!"):
        assert secret not in script
    assert 'HF_TOKEN="${HF_TOKEN}"' in script
    assert 'services.etcd.env.DB_PASSWORD="${TOPOVISOR_SET_SERVICES_ETCD_ENV_DB_PASSWORD}"' in script
    assert ': "${HF_TOKEN:?HF_TOKEN is not set: export it before sbatch' in script
    assert "the script reads a secret from $HF_TOKEN: export it before sbatch" in err
    bash_accepts(script, tmp_path)


def test_the_script_passes_secrets_from_the_environment_to_the_run(tmp_path: Path) -> None:
    """Run the script's shell part for real (python replaced by a program that prints its argv): the secret
    reaches ``supervisor run`` exactly, quoting and all; without it the job stops and names the variable."""
    plan = make_plan(
        topology_from_text(TOPOLOGY), runs_dir=tmp_path / "runs", check_executables=False, nodes=placeholder_nodes(3)
    )
    printer = tmp_path / "print-argv"
    printer.write_text(f"#!{sys.executable}\nimport sys\nprint(repr(sys.argv[1:]))\n")
    printer.chmod(printer.stat().st_mode | stat.S_IXUSR)
    tricky = "a b'$(touch x)\"c"
    script = batch_script(
        plan, "t.yaml", {"HF_TOKEN": tricky, "model": "m"}, python=str(printer), cwd=str(tmp_path), environ={}
    )
    assert tricky not in script.text and script.secrets == {"HF_TOKEN": tricky}
    path = tmp_path / "job.sh"
    path.write_text(script.text)
    env = {"PATH": os.environ["PATH"], "HF_TOKEN": tricky}
    done = subprocess.run(["bash", str(path)], capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 0, done.stderr
    expected = ["-m", "supervisor", "run", "t.yaml", "--slurm", "--set", f"HF_TOKEN={tricky}", "--set", "model=m"]
    assert done.stdout.strip() == repr([*expected, "--set", "cluster.slurm.nodes=4"])
    assert not (tmp_path / "x").exists()
    missing = subprocess.run(
        ["bash", str(path)], capture_output=True, text=True, env={"PATH": os.environ["PATH"]}, timeout=30
    )
    assert missing.returncode != 0 and "HF_TOKEN is not set" in missing.stderr and missing.stdout == ""


def test_a_secret_in_the_command_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = sbatch(tmp_path, capsys, "--", "curl", "--api-key", "abcdefgh", "{etcd.url}")
    assert (code, out) == (2, "")
    assert "the command after -- holds a secret" in err


def test_no_gpus_per_node_when_extra_asks_for_gpus_itself(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, script, _ = sbatch(tmp_path, capsys, text=TOPOLOGY.replace("--exclusive,", "--gres=gpu:8,"))
    assert code == 0
    assert not any("--gpus-per-node" in line for line in sbatch_lines(script))


def test_submit_without_sbatch_says_where_to_run_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch there
    code, out, err = sbatch(tmp_path, capsys, "--submit")
    assert (code, out) == (1, "")
    assert "sbatch not found on PATH" in err


def fake_sbatch(tmp_path: Path, code: int = 0) -> Path:
    """A stand-in ``sbatch`` program: saves its argv, stdin and HF_TOKEN, prints a job id like --parsable."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "sbatch"
    program.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"open({str(tmp_path / 'call.json')!r}, 'w').write(json.dumps("
        "{'argv': sys.argv[1:], 'stdin': sys.stdin.read(), 'token': os.environ.get('HF_TOKEN')}))\n"
        f"print('4242;main') if {code} == 0 else print('sbatch: error: Invalid partition', file=sys.stderr)\n"
        f"sys.exit({code})\n"
    )
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def test_submit_hands_the_script_and_its_secrets_to_sbatch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", f"{fake_sbatch(tmp_path)}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    code, out, err = sbatch(tmp_path, capsys, "--submit", "--set", f"HF_TOKEN={SECRET}")
    assert (code, out) == (0, "4242\n"), err
    call = json.loads((tmp_path / "call.json").read_text())
    assert call["argv"] == ["--parsable"]
    assert call["stdin"].startswith("#!/bin/bash\n") and SECRET not in call["stdin"]
    assert call["token"] == SECRET  # the job gets it through sbatch's environment


def test_submit_of_a_written_file_and_a_refusal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", f"{fake_sbatch(tmp_path, code=1)}{os.pathsep}{os.environ['PATH']}")
    target = tmp_path / "job.sh"
    code, out, err = sbatch(tmp_path, capsys, "--submit", "-o", str(target))
    assert (code, out) == (1, "")
    assert "sbatch failed (exit 1): sbatch: error: Invalid partition" in err
    call = json.loads((tmp_path / "call.json").read_text())
    assert call["argv"] == ["--parsable", str(target)] and call["stdin"] == ""
    assert target.read_text().startswith("#!/bin/bash\n")


SPREAD = """
name: spread
vars: {span: 1}
services:
  web: {command: [sleep, "100"], replicas: 2, placement: {nodes: "${span}"}, gpus: 2, stop: {grace: 20s}}
"""


def test_a_sweeps_script_runs_the_sweep_in_the_batch_job_sized_for_its_largest_arm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``sbatch FILE --vary ... -- CMD``: every arm checked here; the job asks for the largest arm's nodes
    (2 replicas of 2 nodes each: 4) and runs ``supervisor sweep --slurm`` with the sweep's flags and CMD."""
    args = ["--vary", "span=1,2", "--trials", "2", "--order", "ABAB", "--warmup", "echo warm", "--time", "1h"]
    code, script, err = sbatch(tmp_path, capsys, *args, "--", "echo", "{trial_dir}", text=SPREAD)
    assert code == 0, err
    assert sbatch_lines(script) == [
        "#SBATCH --job-name=topovisor-spread-sweep",
        "#SBATCH --nodes=4",
        "#SBATCH --time=1:00:00",
        "#SBATCH --gpus-per-node=2",
        "#SBATCH --signal=B:TERM@110",
        "#SBATCH --no-kill",
    ]
    path = tmp_path / "t.yaml"
    assert script.splitlines()[-1] == (
        f"exec {sys.executable} -m supervisor sweep {path} --slurm --set cluster.slurm.nodes=4 "
        "--set cluster.slurm.time=1:00:00 --vary span=1,2 --trials 2 --order ABAB --warmup 'echo warm' "
        "-- echo '{trial_dir}'"
    )
    bash_accepts(script, tmp_path)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--vary", "span=1,x", "--order", "ABC", "--", "echo"], "arm span=x: service 'web', field 'placement"),
        (["--vary", "span=1,x", "--order", "ABC", "--", "echo"], "--order ABC: names arm C"),
        (["--trials", "2", "--", "echo"], "--trials is a sweep's: give --vary KEY=V1,V2 too"),
        (["--vary", "span=1,2"], "no client command"),
    ],
)
def test_a_sweeps_bad_input_is_reported_before_any_script(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    code, script, err = sbatch(tmp_path, capsys, *args, text=SPREAD)
    assert (code, script) == (2, "")
    assert expected in err
