"""8. Start-up: what a fresh ``supervisor`` process costs before it does anything, against a bare interpreter.

Benchmark scripts start the CLI again and again, so its own start-up is a cost they pay every time. Four
figures, each the median of several fresh processes, interleaved so that all four see the same machine:

- ``python -c pass`` (exec to exit), the baseline of the import;
- ``python -c "import supervisor; supervisor.launch"`` (exec to exit): the library import an embedder pays;
- ``python -c "subprocess.Popen([sh, -c, CHILD])"``, from exec to the child's first act: the baseline of
  the next figure, what any Python program that starts a process pays (the interpreter, its ``site``);
- ``python -m supervisor run FILE`` with one service, from exec to its first child's first act. The child
  is ``sh -c 'date +%s.%N > STAMP; exec sleep 60'``: the wall-clock time it writes is taken as soon as the
  child's first program runs, so nothing of the child's own start-up (no interpreter) is counted but one
  ``sh`` and one ``date`` (about a millisecond or two, left in: the figure errs on the slow side). This
  process reads ``time.time()`` just before its ``Popen`` and compares it with the stamp (same clock).
  Then the run is stopped with SIGTERM (its normal teardown) and reaped; its process group is killed if it
  outlives the limit.

The run is of one file, the same text every round (a harness starts the same topology again and
again), so after the unmeasured first round its document comes from the document cache (under the run's
temporary directory, as the bytecode). Every process measured here caches its bytecode there too
(``PYTHONPYCACHEPREFIX``; ``PYTHONDONTWRITEBYTECODE`` is dropped), as an installed package has its
``.pyc`` files: without them each start compiles the library from source again (about 100 ms more here).
They run in that directory, with the library this script imported first on ``PYTHONPATH``: ``-c`` and
``-m`` put the current directory first on the path, so from a checkout they would measure its code, not
the library named in the header (a snapshot under test, say).
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import anyio
from harness import PYTHON, Result, Settings, Stats, child_env, info, report, rounds

import supervisor

STOP_LIMIT_SECONDS = 30.0
STAMP_LIMIT_SECONDS = 30.0
IMPORT_GOAL_MS = 50.0  # ``import supervisor; supervisor.launch`` at most this much over a bare interpreter
FIRST_CHILD_GOAL_RATIO = 3.0  # then 2.0


def _env(settings: Settings) -> dict[str, str]:
    """The child environment, with a bytecode cache of its own (as an installed package has)."""
    env = child_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["XDG_CACHE_HOME"] = str(settings.work / "cache")  # the topology's document cache, warmed like the bytecode
    env["PYTHONPYCACHEPREFIX"] = str(settings.work / "pycache")
    library = str(Path(supervisor.__file__).resolve().parent.parent)  # the one named in the header
    env["PYTHONPATH"] = os.pathsep.join(p for p in (library, env.get("PYTHONPATH")) if p)
    return env


def _exec_to_exit(settings: Settings, argv: list[str]) -> float:
    """ms from just before the exec to the process's exit (it must succeed)."""
    env = _env(settings)
    began = time.perf_counter()
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env=env, cwd=settings.work, timeout=60)
    elapsed = (time.perf_counter() - began) * 1000
    if done.returncode != 0:
        raise RuntimeError(f"{argv} failed ({done.returncode}): {done.stderr.decode(errors='replace')[-500:]}")
    return elapsed


def _child_script(stamp: Path) -> str:
    return f"date +%s.%N > {stamp}.tmp && mv {stamp}.tmp {stamp}; exec sleep 60"


def _topology(path: Path, stamp: Path) -> None:
    script = _child_script(stamp)
    path.write_text(
        "name: startup\n"
        "services:\n"
        "  first:\n"
        f"    command: [sh, -c, {script!r}]\n"
        "    stop: {signal: SIGTERM, grace: 1s}\n"
    )


async def _first_child(settings: Settings, index: int, *, bare: bool = False) -> float:
    """ms from just before ``python -m supervisor run FILE`` is exec'd to its first child's stamp; with
    ``bare``, the same for an interpreter that only spawns the same child (``python -c "Popen(...)"``)."""
    work = settings.work / "startup"
    work.mkdir(exist_ok=True)
    stamp = work / ("stamp-bare" if bare else "stamp-run")  # one file, run again and again, as a harness does
    stamp.unlink(missing_ok=True)
    if bare:
        code = f"import subprocess; subprocess.Popen(['sh', '-c', {_child_script(stamp)!r}])"
        argv = [PYTHON, "-c", code]
    else:
        topology = work / "startup.yaml"
        _topology(topology, stamp)
        argv = [PYTHON, "-m", "supervisor", "run", str(topology), "--runs-dir", str(settings.runs_dir), "-q"]
    env = _env(settings)
    began = time.time()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=settings.work,
        start_new_session=True,
    )
    try:
        with anyio.fail_after(STAMP_LIMIT_SECONDS):
            while not stamp.exists():
                if proc.poll() is not None and not bare:
                    raise RuntimeError(f"supervisor run exited ({proc.returncode}) before its first child")
                await anyio.sleep(0.002)
        started = float(stamp.read_text())
    finally:
        if bare:  # the interpreter is gone; its child is the only member of the session's group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        elif proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            with anyio.fail_after(STOP_LIMIT_SECONDS):
                while proc.poll() is None:
                    await anyio.sleep(0.01)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    return (started - began) * 1000


async def bench_startup(settings: Settings, results: list[Result]) -> None:
    info(
        "fresh processes: python -c pass | import supervisor; supervisor.launch | python spawning the child"
        " | supervisor run -> first child"
    )
    bare: list[float] = []
    imported: list[float] = []
    bare_child: list[float] = []
    first_child: list[float] = []
    # one unmeasured round of each: the page cache and the bytecode caches are warm before we measure
    _exec_to_exit(settings, [PYTHON, "-c", "pass"])
    _exec_to_exit(settings, [PYTHON, "-c", "import supervisor; supervisor.launch"])
    await _first_child(settings, -1, bare=True)
    await _first_child(settings, -1)
    for index in rounds(settings.count(15, 5), settings.budget(40, 15), minimum=3):
        bare.append(_exec_to_exit(settings, [PYTHON, "-c", "pass"]))
        imported.append(_exec_to_exit(settings, [PYTHON, "-c", "import supervisor; supervisor.launch"]))
        bare_child.append(await _first_child(settings, index, bare=True))
        first_child.append(await _first_child(settings, index))
    base = statistics.median(bare)
    report(
        Result(
            key="startup_import",
            title="8a. import supervisor; supervisor.launch, over a bare interpreter",
            unit="ms",
            value=Stats([value - base for value in imported]),
            baseline=Stats(bare),
            baseline_label="python -c pass",
            goal_kind="max",
            goal=IMPORT_GOAL_MS,
            note=f"raw median {statistics.median(imported):.1f} ms, ratio {statistics.median(imported) / base:.2f}",
        ),
        results,
    )
    report(
        Result(
            key="startup_first_child",
            title="8b. supervisor run: exec -> first child",
            unit="ms",
            value=Stats(first_child),
            baseline=Stats(bare_child),
            baseline_label="python spawning the same child",
            goal_kind="ratio",
            goal=FIRST_CHILD_GOAL_RATIO,
            note=f"then 2x; over python -c pass: {statistics.median(first_child) / base:.2f}x",
        ),
        results,
    )


if __name__ == "__main__":  # alone: python benchmarks/bench_startup.py
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_core

    sys.exit(bench_core.main(["--only", "startup", *sys.argv[1:]]))
