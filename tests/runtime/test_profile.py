"""Profiling (``profile: {tool: nsys | py-spy | torch}``) and the py-spy stack dump before a liveness kill."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import anyio
import psutil
import pytest

import supervisor as sv
from supervisor._host.stackdump import dump_python_stacks
from supervisor._spec.load import topology_from_text

from ..helpers import PYTHON, SLEEPER, alive, plan_of, plan_problems, wait_for

PY_SPY = shutil.which("py-spy")
needs_py_spy = pytest.mark.skipif(PY_SPY is None, reason="py-spy is not installed (pip install py-spy)")
BUSY = [
    PYTHON,
    "-c",
    "import time\nprint('service ready', flush=True)\nstart = time.process_time()\n"
    "while time.process_time() - start < 0.5: sum(range(10000))\n"  # ~50 samples at py-spy's 100 Hz
    "print('worked', flush=True)\nwhile True: sum(range(10000))",
]


def which_without(missing: str):  # type: ignore[no-untyped-def]
    return lambda name, path: None if name == missing else (shutil.which(name, path=path) or f"/usr/bin/{name}")


def profiled(*services: sv.Service, runs_dir: Path, missing: str = "") -> sv.Plan:
    return plan_of(*services, runs_dir=runs_dir, which=which_without(missing))


def problems(*services: sv.Service, runs_dir: Path, missing: str = "") -> str:
    return plan_problems(*services, runs_dir=runs_dir, which=which_without(missing))


def test_nsys_wraps_each_replica_with_its_own_report(runs_dir: Path) -> None:
    """Golden argv: ``nsys profile --output=<run_dir>/profiles/<replica> --force-overwrite=true [args] <argv>``,
    one report per replica, and a stop grace long enough for nsys to write it."""
    service = sv.Service("w", command=["python3", "serve.py", "--port", "{port}"], ports=["port"], replicas=2,
                         profile=sv.Profile("nsys", args=["--trace=cuda,nvtx"]))  # fmt: skip
    plan = profiled(service, runs_dir=runs_dir)
    profiles = plan.run_dir / "profiles"
    for replica in plan.service("w").replicas:
        assert replica.argv == (
            "nsys", "profile", f"--output={profiles / replica.name}", "--force-overwrite=true", "--trace=cuda,nvtx",
            "python3", "serve.py", "--port", str(replica.port),
        )  # fmt: skip
        assert replica.profile is not None and replica.profile.wraps and replica.profile.directory == str(profiles)
        assert replica.stop.grace_seconds == 60.0


def test_py_spy_output_suffix_follows_the_format_and_a_longer_own_grace_stays(runs_dir: Path) -> None:
    service = sv.Service("w", command=["python3", "-m", "srv"], stop=sv.StopPolicy(grace_seconds=90),
                         profile=sv.Profile("py-spy", args=["--format", "speedscope", "--rate", "{replica}0"]))  # fmt: skip
    replica = profiled(service, runs_dir=runs_dir).service("w").replicas[0]
    output = str(profiled(service, runs_dir=runs_dir).run_dir.parent)  # the run id differs per plan
    assert replica.argv[:2] == ("py-spy", "record") and replica.argv[2].startswith(f"--output={output}")
    assert replica.argv[2].endswith("/profiles/w.json")
    assert replica.argv[3:] == ("--format", "speedscope", "--rate", "00", "--", "python3", "-m", "srv")
    assert replica.stop.grace_seconds == 90  # the service's own grace is longer than py-spy's 15 s


def test_torch_sets_the_profiler_dirs_and_the_profile_dir_template(runs_dir: Path) -> None:
    """No wrapper: the engines' torch profiler env (the user's own value wins) and ``{profile_dir}`` for
    vLLM's ``--profiler-config.torch_profiler_dir``."""
    service = sv.Service("w", command=["vllm", "serve", "--profiler-config.torch_profiler_dir={profile_dir}"],
                         env={"SGLANG_TORCH_PROFILER_DIR": "/mine"}, profile="torch")  # fmt: skip
    plan = profiled(service, runs_dir=runs_dir)
    replica = plan.service("w").replicas[0]
    where = str(plan.run_dir / "profiles" / "w")
    assert replica.argv == ("vllm", "serve", f"--profiler-config.torch_profiler_dir={where}")
    assert replica.env["VLLM_TORCH_PROFILER_DIR"] == where and replica.env["SGLANG_TORCH_PROFILER_DIR"] == "/mine"
    assert replica.profile is not None and not replica.profile.wraps and replica.stop.grace_seconds == 10


def test_a_missing_profiler_is_a_config_error_before_anything_starts(runs_dir: Path) -> None:
    service = sv.Service("w", command=["python3"], profile="nsys")
    message = problems(service, runs_dir=runs_dir, missing="nsys")
    assert "service 'w', field 'profile.tool': 'nsys' not found on PATH; install NVIDIA Nsight Systems" in message
    message = problems(sv.Service("w", command=["python3"], profile="py-spy"), runs_dir=runs_dir, missing="py-spy")
    assert "'py-spy' not found on PATH; pip install py-spy" in message


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        (sv.Profile("nsy"), "field 'profile.tool': unknown profiler 'nsy' (did you mean 'nsys'?)"),
        (sv.Profile("py-spy", args=["-o", "x.svg"]), "field 'profile.args': the output is set for you"),
        (sv.Profile("nsys", args=["--output=x"]), "field 'profile.args': the output is set for you"),
        (sv.Profile("py-spy", args=["--pid", "1"]), "py-spy runs the command itself here; drop -p/--pid"),
        (sv.Profile("py-spy", args=["--format=svg"]), "py-spy --format 'svg'"),
        (sv.Profile("torch", args=["x"]), "field 'profile.args': torch takes no args"),
        (sv.Profile("py-spy", args=["a\0b"]), "field 'profile.args': contains a NUL byte"),
        (sv.Profile("py-spy", grace_seconds="48h"), "field 'profile.grace': must be a duration from 0 to a day"),
    ],
)
def test_bad_profile_names_the_service_and_the_field(runs_dir: Path, profile: sv.Profile, expected: str) -> None:
    assert expected in problems(sv.Service("w", command=["python3"], profile=profile), runs_dir=runs_dir)


def test_yaml_profile_forms() -> None:
    text = "name: t\nservices:\n  a:\n    command: [python3]\n    profile: {}\n"
    topology = topology_from_text(text.replace("{}", "{tool: py-spy, args: [--rate, 50], grace: 1m}"))
    assert topology.services[0].profile == sv.Profile("py-spy", args=("--rate", "50"), grace_seconds=60)
    assert topology_from_text(text.replace("{}", "torch")).services[0].profile == sv.Profile("torch")
    with pytest.raises(sv.ConfigError, match=r"field 'profile': unknown field 'arg' \(did you mean 'args'\?\)"):
        topology_from_text(text.replace("{}", "{tool: nsys, arg: []}"))
    with pytest.raises(sv.ConfigError, match=r"field 'profile\.tool': missing"):
        topology_from_text(text.replace("{}", "{args: []}"))


@needs_py_spy
@pytest.mark.anyio
async def test_py_spy_profile_is_written_when_the_run_ends(runs_dir: Path) -> None:
    """The stop signals the program, not py-spy (which dies on SIGTERM without writing): once the program
    exited, py-spy writes the flamegraph and exits by itself, within the grace."""
    service = sv.Service("w", command=BUSY, ready=sv.LogCheck("service ready"), profile="py-spy")
    async with sv.launch(sv.Topology(name="prof", services=[service]), runs_dir=runs_dir) as group:
        output = Path(group.plan.service("w").replicas[0].profile.output)  # type: ignore[union-attr]
        leader = group["w"].pids[0]
        await wait_for(group, lambda h: any(isinstance(e, sv.Ready) for e in h))
        log = group["w"].replicas[0].log_path
        with anyio.fail_after(20):  # py-spy sampling, and half a second of CPU work for it to sample
            while not all(word in log.read_bytes() for word in (b"Sampling process", b"worked")):
                await anyio.sleep(0.02)
    assert output == group.plan.run_dir / "profiles" / "w.svg"
    assert output.read_bytes().lstrip().startswith(b"<?xml") and b"<svg" in output.read_bytes()
    stopped = [e for e in group.event_history if isinstance(e, sv.Stopped)]
    assert stopped and not stopped[0].killed and not alive(leader)
    assert b"Wrote flamegraph data" in log.read_bytes()


@needs_py_spy
@pytest.mark.anyio
async def test_a_restart_keeps_the_ended_incarnations_profile(runs_dir: Path, tmp_path: Path) -> None:
    """Each incarnation writes the same path: before a restart the old report moves to ``w~0.svg``.

    py-spy writes nothing for a program that ends before it attached (a slow machine is slow to attach),
    so each incarnation goes on only once its log says it is sampled: the first then fails, the second
    says ready."""
    flag = tmp_path / "second"
    once = (
        "import os, sys, time\n"
        "def sampled(times):\n"
        "    deadline = time.monotonic() + 60\n"
        "    while time.monotonic() < deadline:\n"
        "        with open(sys.argv[2], 'rb') as log:\n"
        "            if log.read().count(b'Sampling process') >= times: return\n"
        "        sum(range(10**4))\n"
        "if not os.path.exists(sys.argv[1]):\n"
        "    open(sys.argv[1], 'w').close(); sampled(1); sys.exit(3)\n"
        "sampled(2); print('service ready', flush=True)\nwhile True: time.sleep(0.01)"
    )
    service = sv.Service(
        "w",
        command=[PYTHON, "-c", once, str(flag), "{run_dir}/logs/w.log"],
        ready=sv.LogCheck("service ready"),
        restart=sv.RestartPolicy("always", backoff=sv.Backoff(initial_seconds=0, jitter=0)),
        profile="py-spy",
    )
    async with sv.launch(sv.Topology(name="again", services=[service]), runs_dir=runs_dir) as group:
        assert len([e for e in group.event_history if isinstance(e, sv.Spawned)]) == 2
    profiles = group.plan.run_dir / "profiles"
    assert sorted(p.name for p in profiles.iterdir()) == ["w.svg", "w~0.svg"]
    assert all(b"<svg" in p.read_bytes() for p in profiles.iterdir())


@needs_py_spy
@pytest.mark.anyio
async def test_hung_python_service_gets_a_py_spy_dump_in_its_log_before_the_restart(runs_dir: Path) -> None:
    """A liveness failure kills the process and with it where it hung: the py-spy dump comes first."""
    hang = "import time\ndef stuck_here():\n    time.sleep(600)\nprint('service ready', flush=True)\nstuck_here()"
    healthy = {"ok": True}

    async def health(target: object) -> bool:
        return healthy["ok"]

    service = sv.Service(
        "w",
        command=[PYTHON, "-c", hang],
        ready=sv.LogCheck("service ready"),
        alive=sv.Probe(health, period_seconds=0.02, failures=1),
        restart=sv.RestartPolicy("on-failure", backoff=sv.Backoff(initial_seconds=0, jitter=0)),
        stop=sv.StopPolicy(grace_seconds=2),
    )
    async with sv.launch(sv.Topology(name="hang", services=[service]), runs_dir=runs_dir) as group:
        healthy["ok"] = False
        await wait_for(group, lambda h: any(isinstance(e, sv.Restarting) for e in h), timeout=30)
        healthy["ok"] = True
        log = group["w"].replicas[0].log_path.read_text()
    if "Permission denied" in log or "Operation not permitted" in log:
        pytest.skip("py-spy may not read another process's memory here (no ptrace permission): " + log[-300:])
    _, _, after = log.partition("--- topovisor: py-spy dump --pid")
    assert after, log
    dump, _, rest = after.partition("--- topovisor: end of py-spy dump")
    assert "before the kill (liveness failed)" in dump and "stuck_here" in dump, log
    assert rest.startswith(" --pid") and "(exit code 0)" in rest.splitlines()[0]  # read from the live process


@pytest.mark.anyio
async def test_without_py_spy_one_note_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no py-spy on PATH
    lines: list[bytes] = []
    with anyio.fail_after(5):
        assert await dump_python_stacks(os.getpid(), "liveness failed", lines.append) == 0
    assert lines == [b"--- topovisor: no stack dump before the kill (liveness failed): py-spy is not installed ---\n"]


@pytest.mark.anyio
async def test_a_non_python_process_is_not_dumped(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        lines: list[bytes] = []
        await dump_python_stacks(sleeper.pid, "liveness failed", lines.append, py_spy="/bin/false")
        assert lines == [
            f"--- topovisor: no stack dump before the kill (liveness failed): no Python process in pid {sleeper.pid}'s tree ---\n".encode()
        ]
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.anyio
async def test_a_stuck_dump_is_bounded_and_its_process_killed(tmp_path: Path) -> None:
    """A py-spy that never answers (here a stand-in that hangs) costs at most its time bound, never the stop."""
    fake = tmp_path / "py-spy"
    pidfile = tmp_path / "pid"
    fake.write_text(
        f"#!{PYTHON}\nimport os, time\nopen({str(pidfile)!r}, 'w').write(str(os.getpid()))\nprint('attaching', flush=True)\ntime.sleep(600)\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    target = subprocess.Popen(SLEEPER, stdout=subprocess.DEVNULL)
    try:
        lines: list[bytes] = []
        began = time.monotonic()
        with anyio.fail_after(10):
            await dump_python_stacks(target.pid, "liveness failed", lines.append, py_spy=str(fake), seconds=0.5)
        assert time.monotonic() - began < 5
        text = b"".join(lines).decode()
        assert f"py-spy dump --pid {target.pid} before the kill" in text and "attaching" in text
        assert f"end of py-spy dump --pid {target.pid} (timed out)" in text
        stuck = int(pidfile.read_text())
        assert not psutil.pid_exists(stuck) or psutil.Process(stuck).status() == psutil.STATUS_ZOMBIE
    finally:
        target.kill()
        target.wait()
