"""Chaos: randomized faults against real `supervisor run` processes; after each run, no hang and 0 survivors.

Each iteration runs a small random topology (1-3 services: SIGTERM-ignoring trees with children in and out
of their process group and a double-forked daemon, crash loops, a service that SIGSTOPs itself, a job that
leaves an ``env -i`` child ignoring SIGTERM in its group) and
injects a few faults at random phases (while starting, once ready, during teardown): SIGTERM, SIGINT or
SIGKILL to the `supervisor run` CLI; SIGINT to the process group of `supervisor run --detach` while it
starts (a quarter of the iterations); SIGKILL to its watchdog; SIGKILL, SIGSTOP or SIGTERM to service
leaders and to their grandchildren; a whole tree SIGSTOPped; the run's logs dir removed. Then: the CLI
must exit within a bounded wait, without a traceback, and within 15 s nothing may remain: no process with
the run's mark, none of the pids the services recorded, no watchdog of the run. When the CLI and its
watchdog were both SIGKILLed, ``supervisor gc --yes`` (the documented path) must clean up.

TOPOVISOR_CHAOS_FAULTS (default 30) sets how many faults to drive, TOPOVISOR_CHAOS_SEED fixes the seed
(printed at the start, in every failure and in the summary), TOPOVISOR_CHAOS_BUDGET caps the seconds
(default: 35 for the short form, else 1.2 per fault), TOPOVISOR_CHAOS_SKIP leaves fault kinds out
(comma-separated, e.g. logs_removed), TOPOVISOR_CHAOS_MAX_FAILURES (default 5) stops it after that many
failed iterations. Signals go only to processes this test started,
checked by the run's mark or the watchdog's command line, through psutil (which re-checks create times).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from supervisor._host.process import RUN_ID_ENV
from supervisor._host.proctable import marked_processes

from ..helpers import PROGRAMS, PYTHON

ROOT = Path(__file__).parents[2]
FAULTS = int(os.environ.get("TOPOVISOR_CHAOS_FAULTS", "30"))
BUDGET = float(os.environ.get("TOPOVISOR_CHAOS_BUDGET", "35" if FAULTS <= 30 else str(1.2 * FAULTS)))
EXIT_WAIT = 60.0  #: the CLI must be gone this long after its last signal (a busy 2-core machine)
SURVIVOR_WAIT = 15.0  #: and everything of the run this long after the CLI
MAX_FAILURES = int(os.environ.get("TOPOVISOR_CHAOS_MAX_FAILURES", "5"))  #: failed iterations before it stops
#: fault kinds left out, comma-separated (to tell a known defect from a new one), e.g. "logs_removed"
SKIP = {kind.strip() for kind in os.environ.get("TOPOVISOR_CHAOS_SKIP", "").split(",") if kind.strip()}

PHASES = ("starting", "ready", "teardown")
#: faults other than the final signal to the CLI, with weights
FAULT_KINDS = {
    "watchdog_sigkill": 3,
    "service_sigkill": 3,
    "service_sigstop": 2,
    "service_sigterm": 2,
    "grandchild_sigkill": 2,
    "grandchild_sigstop": 2,
    "grandchild_sigterm": 1,
    "tree_sigstop": 2,
    "logs_removed": 1,
}
FAULT_KINDS = {kind: weight for kind, weight in FAULT_KINDS.items() if kind not in SKIP}
TEARDOWN_ONLY = {"cli_second_sigterm": 1, "cli_second_sigint": 1, "cli_sigkill_in_teardown": 2}
TEARDOWN_ONLY = {kind: weight for kind, weight in TEARDOWN_ONLY.items() if kind not in SKIP}
FINALE = {"cli_sigterm": signal.SIGTERM, "cli_sigint": signal.SIGINT, "cli_sigkill": signal.SIGKILL}
SIGNALS = {"sigkill": signal.SIGKILL, "sigstop": signal.SIGSTOP, "sigterm": signal.SIGTERM}


def _process(pid: int) -> psutil.Process | None:
    with contextlib.suppress(psutil.Error):
        process = psutil.Process(pid)
        if process.status() != psutil.STATUS_ZOMBIE:
            return process
    return None


def _ours(pid: int, run_id: str | None) -> psutil.Process | None:
    """``pid`` as a live process of this run: it carries the run's mark, or is the run's watchdog."""
    process = _process(pid)
    if process is None or run_id is None:
        return None
    with contextlib.suppress(psutil.Error):
        if process.environ().get(RUN_ID_ENV) == run_id:
            return process
        cmdline = process.cmdline()
        if "supervisor._host.watchdog" in cmdline and run_id in cmdline:
            return process
    return None


def _watchdogs(run_id: str | None) -> list[int]:
    """Live watchdogs of the run (found by their command line, to be checked; signalled only via _ours)."""
    if run_id is None:
        return []
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "supervisor._host.watchdog" in cmdline and run_id in cmdline and _process(process.pid) is not None:
            found.append(process.pid)
    return found


class Iteration:
    """One `supervisor run` of a random topology, its faults, and the checks that follow."""

    def __init__(self, number: int, rng: random.Random, work: Path, runs_dir: Path, faults: Counter[str]) -> None:
        self.number, self.rng, self.work, self.runs_dir, self.faults = number, rng, work, runs_dir, faults
        self.features: Counter[str] = Counter()
        self.services: list[str] = []
        self.scrubbed: list[str] = []  #: services whose env -i child outlives their leader
        self.run_id: str | None = None
        self.stderr: list[str] = []
        self.ready = threading.Event()  #: all ready, or the CLI is gone
        self.read_all = threading.Event()  #: its stderr was read to the end
        self.cli: subprocess.Popen[str] | None = None
        self.cli_sigkilled = False
        self.watchdog_killed_after_cli = False
        self.watchdog_dead_at_kill = False
        self.used_gc = False
        self.gc_said = ""  #: what ``gc --yes`` printed, for a failure message
        self.log: list[str] = []  #: what was done, for a failure message

    # ----- topology ------------------------------------------------------------------------------------
    def topology(self) -> Path:
        rng = self.rng
        lines = [f"name: chaos{self.number}", "services:"]
        count = rng.randint(1, 3)
        for index in range(count):
            name = f"s{index}"
            self.services.append(name)
            pids = self.work / f"{name}.pids"
            kinds = {
                "tree": 5,
                "crashloop": 0 if "crash_loop" in SKIP else 2,
                "selfstop": 1,
                "scrubbed": 0 if "scrubbed_child" in SKIP else 1,
            }
            kind = rng.choices(list(kinds), weights=list(kinds.values()))[0]
            self.features[kind] += 1
            if kind == "tree":
                argv = [str(PROGRAMS / "tree.py"), "--pids", str(pids), "--children", str(rng.randint(0, 2)),
                        "--setsid-children", str(rng.randint(0, 2))]  # fmt: skip
                if rng.random() < 0.6:
                    argv.append("--ignore-term")
                    self.features["ignores_sigterm"] += 1
                if rng.random() < 0.5:
                    argv.append("--daemon")
                    self.features["double_forked_daemon"] += 1
                ready = "    ready: {log: tree ready, timeout: 60s}"
            elif kind == "crashloop":
                argv = [str(PROGRAMS / "flaky.py"), "--pids", str(pids), "--crash-after", f"{rng.uniform(0, 0.1):.3f}"]
                ready = ""  # ready once started: a crash loop from the first second must not block the start
                self.faults["crash_loop"] += 1
            elif kind == "scrubbed":  # a job whose env -i child ignores SIGTERM and outlives it, in its group
                argv = [str(PROGRAMS / "scrubbed_job.py"), "--pids", str(pids)]
                ready = ""
                self.scrubbed.append(name)
                self.faults["scrubbed_child"] += 1
            else:
                argv = [str(PROGRAMS / "flaky.py"), "--pids", str(pids), "--hang-after", f"{rng.uniform(0, 0.5):.3f}"]
                ready = "    ready: {log: service ready, timeout: 60s}"
            command = ", ".join(["'{python}'", *(f"'{arg}'" for arg in argv)])
            policy = "on-failure" if kind == "crashloop" or rng.random() < 0.5 else "no"
            lines += [
                f"  {name}:",
                f"    command: [{command}]",
                f"    stop: {{grace: {rng.choice(['0s', '100ms', '300ms'])}}}",
                f"    restart: {{policy: {policy}, max_restarts: 100000, window: 1s,"
                " backoff: {initial: 1ms, max: 10ms, jitter: 0}}",
            ]
            if ready:
                lines.append(ready)
            if index and rng.random() < 0.5:
                lines.append(f"    depends_on: [s{rng.randrange(index)}]")
        path = self.work / "topology.yaml"
        path.write_text("\n".join(lines) + "\n")
        return path

    # ----- the run ---------------------------------------------------------------------------------------
    def start(self) -> None:
        argv = [PYTHON, "-m", "supervisor", "run", str(self.topology()), "--runs-dir", str(self.runs_dir)]
        self.cli = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            cwd=ROOT, start_new_session=True,
        )  # fmt: skip
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stderr(self) -> None:
        assert self.cli is not None and self.cli.stderr is not None
        for line in self.cli.stderr:
            self.stderr.append(line)
            said = line.partition("[supervisor] ")[2]  # after the timestamp
            if said.startswith("run ") and self.run_id is None:
                self.run_id = said.split()[1].rstrip(":")
            if " ready in " in said and said.startswith("all "):
                self.ready.set()
        self.ready.set()  # the CLI is gone: nothing to wait for
        self.read_all.set()

    def recorded_pids(self) -> list[int]:
        """What the services recorded; a scrubbed child of an exited leader is held to it unless both the
        supervisor and its watchdog were SIGKILLed (then only the run's process group of a dead leader ties
        it to the run, which gc does not trust: left to cgroup containment, and killed in cleanup)."""
        pids: list[int] = []
        for name in self.services:
            if self.used_gc and name in self.scrubbed:
                continue
            with contextlib.suppress(OSError):
                pids += [int(p) for p in (self.work / f"{name}.pids").read_text().split() if p.strip().isdigit()]
        return pids

    def leaders(self) -> list[int]:
        """The service leaders now: the CLI's children that carry the run's mark."""
        assert self.cli is not None
        with contextlib.suppress(psutil.Error):
            return [c.pid for c in psutil.Process(self.cli.pid).children() if _ours(c.pid, self.run_id)
                    and "supervisor._host.watchdog" not in c.cmdline()]  # fmt: skip
        return []

    def cli_watchdogs(self) -> list[int]:
        """The watchdogs among the live CLI's children (no run id needed: it may not be printed yet)."""
        assert self.cli is not None
        with contextlib.suppress(psutil.Error):
            return [c.pid for c in psutil.Process(self.cli.pid).children()
                    if "supervisor._host.watchdog" in c.cmdline() and _process(c.pid) is not None]  # fmt: skip
        return []

    def signal_pids(self, kind: str, pids: list[int], signum: signal.Signals) -> bool:
        sent = False
        for pid in pids:
            process = _ours(pid, self.run_id)
            if process is None:
                continue
            with contextlib.suppress(psutil.Error):
                process.send_signal(signum)
                sent = True
        if sent and signum == signal.SIGKILL:  # gone before the next step: "dead" must mean dead
            deadline = time.monotonic() + 5
            while any(_ours(pid, self.run_id) for pid in pids) and time.monotonic() < deadline:
                time.sleep(0.005)
        if sent:
            self.faults[kind] += 1
            self.log.append(f"{kind} {pids}")
        return sent

    def signal_cli(self, kind: str, signum: signal.Signals) -> None:
        assert self.cli is not None
        if self.cli.poll() is not None:
            return
        if signum == signal.SIGKILL and not self.cli_sigkilled:
            # the documented gc case: the watchdog is dead too (killed, its replacement not yet started);
            # none at all before the first spawn: then nothing was started and nothing should be needed
            alive_watchdogs = self.cli_watchdogs()
            self.watchdog_dead_at_kill = not alive_watchdogs
            self.log.append(f"watchdogs alive at the CLI's SIGKILL: {alive_watchdogs}")
        with contextlib.suppress(ProcessLookupError):
            self.cli.send_signal(signum)  # our own child, not yet reaped: its pid cannot have been reused
            self.faults[kind] += 1
            self.log.append(kind)
            if signum == signal.SIGKILL:
                self.cli_sigkilled = True

    def inject(self, kind: str) -> None:
        rng = self.rng
        if kind in ("cli_second_sigterm", "cli_second_sigint", "cli_sigkill_in_teardown"):
            signum = {"cli_second_sigterm": signal.SIGTERM, "cli_second_sigint": signal.SIGINT}.get(
                kind, signal.SIGKILL
            )
            self.signal_cli(kind, signum)
        elif kind == "watchdog_sigkill":
            if self.signal_pids(kind, _watchdogs(self.run_id), signal.SIGKILL) and self.cli_sigkilled:
                self.watchdog_killed_after_cli = True
        elif kind.startswith("service_"):
            leaders = self.leaders() or self.recorded_pids()[:1]  # the CLI is gone: the first recorded leader
            if leaders:
                self.signal_pids(kind, [rng.choice(leaders)], SIGNALS[kind.split("_")[1]])
        elif kind.startswith("grandchild_"):
            current = set(self.leaders())
            others = [p for p in self.recorded_pids() if p not in current]
            if others:
                self.signal_pids(
                    kind, rng.sample(others, min(len(others), rng.randint(1, 3))), SIGNALS[kind.split("_")[1]]
                )
        elif kind == "tree_sigstop":
            self.signal_pids(kind, self.recorded_pids(), signal.SIGSTOP)
        elif kind == "logs_removed" and self.run_id is not None and (self.runs_dir / self.run_id / "logs").is_dir():
            shutil.rmtree(self.runs_dir / self.run_id / "logs", ignore_errors=True)
            self.faults[kind] += 1
            self.log.append(kind)

    def drive(self) -> None:
        """Faults in phase order: some while starting, some once ready, the final CLI signal, some in teardown."""
        rng = self.rng
        planned = sorted(
            ((rng.choice(PHASES), rng.choices(list(FAULT_KINDS), weights=list(FAULT_KINDS.values()))[0])
             for _ in range(rng.randint(1, 4))),
            key=lambda item: PHASES.index(item[0]),
        )  # fmt: skip
        finale_phase = rng.choice(["starting", "ready", "ready"])
        finale = rng.choices(list(FINALE), weights=[4, 3, 4])[0]
        done_finale = False
        if TEARDOWN_ONLY and any(phase == "teardown" for phase, _ in planned) and rng.random() < 0.5:
            planned.append(("teardown", rng.choices(list(TEARDOWN_ONLY), weights=list(TEARDOWN_ONLY.values()))[0]))
        for phase, kind in planned:
            if phase != "starting" and not done_finale and finale_phase == "starting":
                self.signal_cli(finale, FINALE[finale])
                done_finale = True
            if phase in ("ready", "teardown"):
                self.ready.wait(60)
            if phase == "teardown" and not done_finale:
                self.signal_cli(finale, FINALE[finale])
                done_finale = True
            time.sleep(rng.uniform(0, 0.4) if phase == "starting" else rng.uniform(0, 0.25))
            self.inject(kind)
        if not done_finale:
            if finale_phase == "ready":
                self.ready.wait(60)
            time.sleep(rng.uniform(0, 0.2))
            self.signal_cli(finale, FINALE[finale])

    # ----- checks ----------------------------------------------------------------------------------------
    def survivors(self) -> list[str]:
        left = [f"{pid} (recorded)" for pid in self.recorded_pids() if _process(pid) is not None]
        if self.run_id is not None:
            left += [f"{pid} (marked {name})" for pid, (name, _) in marked_processes(self.run_id).items()]
            left += [f"{pid} (watchdog)" for pid in _watchdogs(self.run_id)]
        return left

    def check(self) -> list[str]:
        """Wait for the CLI and then for the run to be empty; the problems found (empty: all good)."""
        assert self.cli is not None
        problems = []
        try:
            code = self.cli.wait(EXIT_WAIT)
        except subprocess.TimeoutExpired:
            problems.append(f"hang: the CLI did not exit within {EXIT_WAIT:.0f}s of its last signal")
            self.cli.kill()
            code = self.cli.wait(10)
            self.cli_sigkilled = True
        self.read_all.wait(10)  # a survivor holding the pipe would delay it: the check below names it
        text = "".join(self.stderr)
        if "Traceback" in text and not (self.run_id is None and "KeyboardInterrupt" in text):
            problems.append(f"the CLI crashed (exit {code}): {text[-1500:]}")
        # a claim of "verified" is checked at once, without waiting (the watchdog might hide a wrong claim)
        if "verified: no process of the run is left" in text and self.run_id and marked_processes(self.run_id):
            problems.append(f"claimed verified but marked processes remain: {sorted(marked_processes(self.run_id))}")
        killed_watchdog = any(entry.startswith("watchdog_sigkill") for entry in self.log)
        if self.cli_sigkilled and (self.watchdog_killed_after_cli or (self.watchdog_dead_at_kill and killed_watchdog)):
            self.used_gc = True
            self.log.append("gc --yes")
            gc = subprocess.run([PYTHON, "-m", "supervisor", "gc", "--yes"], capture_output=True, text=True,
                                timeout=120, cwd=ROOT)  # fmt: skip
            if gc.returncode != 0:
                problems.append(f"gc --yes failed ({gc.returncode}): {gc.stdout}{gc.stderr}")
            self.gc_said = f"{gc.stdout}{gc.stderr}".strip()
        deadline = time.monotonic() + SURVIVOR_WAIT
        while (left := self.survivors()) and time.monotonic() < deadline:
            time.sleep(0.05)
        if left:
            said = f"; gc --yes said: {self.gc_said}" if self.used_gc else ""
            problems.append(f"survivors {SURVIVOR_WAIT:.0f}s after the CLI exited ({code}): {left}{said}")
        return problems

    def cleanup(self) -> None:
        """Kill whatever of this run is left (only processes carrying its mark or its watchdog's command line)."""
        if self.cli is not None:
            if self.cli.poll() is None:
                self.cli.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.cli.wait(10)
        for _ in range(100):
            pids = set(self.recorded_pids()) | set(_watchdogs(self.run_id))
            if self.run_id is not None:
                pids |= set(marked_processes(self.run_id))
            victims = [p for p in (_ours(pid, self.run_id) for pid in pids) if p is not None]
            if not victims:
                break
            for process in victims:
                with contextlib.suppress(psutil.Error):
                    process.kill()
            time.sleep(0.05)
        for name in self.scrubbed:  # no mark to tell them by: the pid it recorded, if still that sleep
            with contextlib.suppress(OSError):
                for word in (self.work / f"{name}.pids").read_text().split():
                    process = _process(int(word))
                    with contextlib.suppress(psutil.Error):
                        if process is not None and process.cmdline() == ["sleep", "1000"]:
                            process.kill()
        if self.cli is not None and self.cli.stderr is not None:
            self.cli.stderr.close()


class DetachIteration(Iteration):
    """``supervisor run --detach`` of a random topology, the CLI's process group SIGINTed while it starts:
    as soon as the CLI has a child (inside its spawn, where the signal once escaped and orphaned the run)
    or a random moment later. It exits 130 with nothing left, or 0 with the run's id once the run was
    handed over (then ``supervisor stop`` ends it); never a run nobody knows of."""

    background: psutil.Process | None = None  #: the CLI's first child: the background run

    def start(self) -> None:
        self.before = set(self.runs_dir.iterdir()) if self.runs_dir.is_dir() else set()
        argv = [PYTHON, "-m", "supervisor", "run", "--detach", str(self.topology()), "--runs-dir", str(self.runs_dir)]
        self.cli = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=ROOT, start_new_session=True,
        )  # fmt: skip

    def drive(self) -> None:
        assert self.cli is not None
        children = Path(f"/proc/{self.cli.pid}/task/{self.cli.pid}/children")
        deadline = time.monotonic() + EXIT_WAIT
        while self.cli.poll() is None and time.monotonic() < deadline:  # its first child: the spawn under way
            with contextlib.suppress(OSError, IndexError, psutil.Error):
                self.background = psutil.Process(int(children.read_text().split()[0]))
                break
        if self.rng.random() < 0.5:
            time.sleep(self.rng.uniform(0, 1.0))
        if self.cli.poll() is not None:  # reaped: its group id may be someone else's now
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.cli.pid, signal.SIGINT)  # our CLI leads the group (its run has a session of its own)
            self.faults["detach_group_sigint"] += 1
            self.log.append("detach_group_sigint")

    def check(self) -> list[str]:
        assert self.cli is not None
        problems = []
        try:
            out, err = self.cli.communicate(timeout=EXIT_WAIT)
        except subprocess.TimeoutExpired:
            self.cli.kill()
            out, err = self.cli.communicate(timeout=10)
            problems.append(f"hang: the CLI did not exit within {EXIT_WAIT:.0f}s of the SIGINT")
        self.stderr.append(err)
        created = (
            [p.name for p in self.runs_dir.iterdir() if p.is_dir() and p not in self.before]
            if self.runs_dir.is_dir()
            else []
        )
        self.run_id = created[0] if created else None
        code = self.cli.returncode
        self.log.append(f"exit {code}")
        if "Traceback" in err:
            problems.append(f"the CLI crashed (exit {code}): {err[-1500:]}")
        if self.run_id is not None and out.strip() == self.run_id:  # handed over, its id out: ours to stop
            # exit 0; 130 or killed by SIGINT only from one after the hand-over, as the CLI exits (its id is out)
            if code not in (0, 128 + signal.SIGINT, -signal.SIGINT):
                problems.append(f"exit {code} with the run's id printed: {err}")
            stopped = subprocess.run([PYTHON, "-m", "supervisor", "stop", self.run_id], capture_output=True,
                                     text=True, timeout=120, cwd=ROOT)  # fmt: skip
            if stopped.returncode != 0:
                problems.append(f"stop after the hand-over failed ({stopped.returncode}): {stopped.stderr}")
        elif code != 128 + signal.SIGINT or out.strip():
            problems.append(f"exit {code}, stdout {out.strip()!r}: neither handed over nor cancelled: {err}")
        elif self.background is not None and self.background.is_running():
            problems.append(f"exit 130 without a run id, but the background run {self.background.pid} goes on: {err}")
        deadline = time.monotonic() + SURVIVOR_WAIT
        while (left := self.survivors()) and time.monotonic() < deadline:
            time.sleep(0.05)
        if left:
            problems.append(f"survivors {SURVIVOR_WAIT:.0f}s after the CLI exited ({code}): {left}")
        return problems

    def cleanup(self) -> None:
        if self.background is not None and self.background.is_running():  # the run this test started
            with contextlib.suppress(psutil.Error):
                self.background.terminate()
                self.background.wait(60)
        super().cleanup()


@pytest.mark.timeout(BUDGET + 300)  # past the budget only the last iteration runs: bounded by its waits
def test_chaos_randomized_faults_leave_no_survivor_and_no_hang(tmp_path: Path, runs_dir: Path) -> None:
    seed = int(os.environ.get("TOPOVISOR_CHAOS_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"chaos: seed {seed} (TOPOVISOR_CHAOS_SEED={seed} reproduces the choices), {FAULTS} faults wanted")
    rng = random.Random(seed)
    faults: Counter[str] = Counter()
    features: Counter[str] = Counter()
    gc_runs = 0
    failures: list[str] = []
    began = time.monotonic()
    iterations = 0
    while sum(faults.values()) < FAULTS and time.monotonic() - began < BUDGET:
        work = tmp_path / f"i{iterations}"
        work.mkdir()
        detached = "detach_group_sigint" not in SKIP and rng.random() < 0.25
        iteration = (DetachIteration if detached else Iteration)(iterations, rng, work, runs_dir, faults)
        iterations += 1
        try:
            iteration.start()
            iteration.drive()
            problems = iteration.check()
        finally:
            iteration.cleanup()
        features += iteration.features
        gc_runs += iteration.used_gc
        if problems:
            failures.append(
                f"seed {seed} iteration {iteration.number} run {iteration.run_id} ({', '.join(iteration.log)}):"
                f" {'; '.join(problems)}\n  topology:\n{(work / 'topology.yaml').read_text()}"
            )
            print(failures[-1], flush=True)
            if len(failures) >= MAX_FAILURES:
                break
    total = sum(faults.values())
    by_kind = ", ".join(f"{kind} {n}" for kind, n in sorted(faults.items()))
    print(
        f"chaos summary: seed {seed}, {iterations} iterations, {total} faults ({by_kind}),"
        f" topologies ({', '.join(f'{k} {n}' for k, n in sorted(features.items()))}),"
        f" gc --yes needed {gc_runs}x, {len(failures)} failed iterations (hang, crash or survivor), {time.monotonic() - began:.1f}s"
    )
    assert not failures, "\n".join(failures)
    assert iterations >= 2 and total >= min(FAULTS, 2 * iterations)
