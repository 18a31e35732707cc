"""Profiling a service: its replicas' commands wrapped by nsys, py-spy or rocprofv3, or the torch profiler's env set.

Planning, pure: what runs, where the output goes (``<run_dir>/profiles/<replica>...``) and how long a stop
waits for the profiler to write it. The runtime reads the result from ``ReplicaPlan.profile`` (and moves
an ended incarnation's report aside before a restart, ``PlannedProfile.keep_previous``).

nsys, rocprofv3 and py-spy write their report when the profiled program exits; py-spy dies at once on SIGTERM
without writing anything (only SIGINT makes it stop and write). So a stop signals the program (every
process of the replica but the profiler, which leads the group) and the profiler finishes on its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping

import attrs

from .._errors import suggest
from .model import PROFILE_TOOLS, Profile

__all__ = [
    "PROFILE_GRACE_SECONDS",
    "TORCH_PROFILER_ENV",
    "PlannedProfile",
    "check_profile",
    "plan_profile",
    "profile_tool_hint",
]

#: how long a stop waits at least for a profiler to write its report once the program exited: nsys
#: post-processes its capture into a .nsys-rep (seconds to minutes for a long GPU run); py-spy writes a
#: flamegraph in well under a second, the rest is the program's own shutdown; rocprofv3 flushes its buffers
#: and writes its SQLite database (rocpd) when the program finalises
PROFILE_GRACE_SECONDS: Mapping[str, float] = {"nsys": 60.0, "py-spy": 15.0, "rocprof": 60.0, "torch": 0.0}
#: read by vLLM and SGLang (their /start_profile, /stop_profile endpoints write torch traces there)
TORCH_PROFILER_ENV = ("VLLM_TORCH_PROFILER_DIR", "SGLANG_TORCH_PROFILER_DIR")
_WRAPPERS = ("nsys", "py-spy", "rocprof")
_OUTPUT_FLAGS = ("-o", "--output")
_ROCPROF_OUTPUT_FLAGS = ("-d", "--output-directory", "-o", "--output-file")
#: what rocprofv3 collects when ``args`` choose nothing (it collects nothing by default): HIP and HSA API
#: calls, memory copies, kernel dispatches and markers, at a lower cost than ``--sys-trace``
ROCPROF_DEFAULT_ARGS = ("--runtime-trace",)
_PY_SPY_SUFFIX = {"flamegraph": ".svg", "speedscope": ".json", "chrometrace": ".json", "raw": ".txt"}
_HINTS = {
    "nsys": "install NVIDIA Nsight Systems (the nsys CLI) or remove profile:",
    "py-spy": "pip install py-spy, or remove profile:",
    "rocprofv3": "install ROCm's rocprofiler-sdk (rocprofv3, ROCm 6.2+; /opt/rocm/bin on PATH) or remove profile:",
}


@attrs.frozen
class PlannedProfile:
    """A replica's profiling, resolved."""

    tool: str
    #: the report file (py-spy), its path without .nsys-rep (nsys), or the directory of the reports (rocprof:
    #: ``<pid>_results.db`` per profiled process) or of the traces (torch)
    output: str
    wraps: bool  #: the profiler is the replica's leader and the program its child

    @property
    def directory(self) -> str:
        """What must exist before the spawn."""
        return self.output if self.tool in ("torch", "rocprof") else os.path.dirname(self.output)

    @property
    def report(self) -> str | None:
        """The file the profiler writes, or its directory (rocprof); None for torch: the engine names its traces."""
        if self.tool == "torch":
            return None
        return self.output + ".nsys-rep" if self.tool == "nsys" else self.output

    def keep_previous(self, incarnation: int) -> None:
        """Before a restart: the report of incarnation ``incarnation`` (the one that ended) moves to
        ``<replica>~<incarnation><suffix>``, so the next one does not overwrite it (the crash is the
        interesting one)."""
        report = self.report
        if report is None or not os.path.exists(report):
            return
        name = os.path.basename(report)
        if self.tool == "rocprof":  # a directory: ``w.0`` has no suffix to keep
            stem = name
        else:
            stem = name.split(".nsys-rep")[0] if self.tool == "nsys" else os.path.splitext(name)[0]
        os.replace(report, os.path.join(os.path.dirname(report), f"{stem}~{incarnation}{name[len(stem) :]}"))


def _option(args: Iterable[str], names: tuple[str, ...]) -> str | None:
    """The value of the last ``-x V``, ``--xx V`` or ``--xx=V`` among ``args``; None when absent."""
    found: str | None = None
    items = list(args)
    for index, arg in enumerate(items):
        for name in names:
            if arg == name and index + 1 < len(items):
                found = items[index + 1]
            elif name.startswith("--") and arg.startswith(name + "="):
                found = arg.partition("=")[2]
    return found


def _given(args: Iterable[str], names: tuple[str, ...]) -> bool:
    return any(arg in names or any(arg.startswith(n + "=") for n in names if n.startswith("--")) for arg in args)


def check_profile(profile: Profile, where: str, report: Callable[[str], None]) -> None:
    """Checks of the spec; ``where`` names the service. The tool's executable is checked by ``plan``."""
    field = f"{where}, field 'profile"
    if not isinstance(profile.tool, str) or profile.tool not in PROFILE_TOOLS:
        report(
            f"{field}.tool': unknown profiler {profile.tool!r}" + suggest(str(profile.tool), PROFILE_TOOLS)
            + f"; one of {', '.join(PROFILE_TOOLS)}"
        )  # fmt: skip
        return
    for arg in profile.args:
        if not isinstance(arg, str):
            report(f"{field}.args': expected strings, got {arg!r}")
            return
        if "\0" in arg:
            report(f"{field}.args': contains a NUL byte")
            return
    if profile.tool == "torch" and profile.args:
        report(f"{field}.args': torch takes no args (it only sets {' and '.join(TORCH_PROFILER_ENV)})")
    elif profile.tool == "rocprof" and _given(profile.args, _ROCPROF_OUTPUT_FLAGS):
        report(f"{field}.args': the output is set for you (<run_dir>/profiles/<replica>); drop -d/-o")
    elif profile.tool in _WRAPPERS and _given(profile.args, _OUTPUT_FLAGS):
        report(f"{field}.args': the output is set for you (<run_dir>/profiles/<replica>); drop -o/--output")
    if profile.tool == "py-spy":
        if _given(profile.args, ("-p", "--pid")):
            report(f"{field}.args': py-spy runs the command itself here; drop -p/--pid")
        fmt = _option(profile.args, ("-f", "--format"))
        if fmt is not None and fmt not in _PY_SPY_SUFFIX:
            report(f"{field}.args': py-spy --format {fmt!r}" + suggest(fmt, _PY_SPY_SUFFIX) + "; one of "
                   + ", ".join(_PY_SPY_SUFFIX))  # fmt: skip
    grace = profile.grace_seconds
    number = isinstance(grace, (int, float)) and not isinstance(grace, bool)
    if grace is not None and (not number or not 0 <= grace <= 86400):
        report(f"{field}.grace': must be a duration from 0 to a day, got {grace!r}")


def profile_tool_hint(tool: str) -> str:
    return _HINTS.get(tool, "")


def plan_profile(
    profile: Profile, argv: tuple[str, ...], run_dir: str, replica: str
) -> tuple[tuple[str, ...], dict[str, str], float, PlannedProfile]:
    """The wrapped argv, the env to add, the least stop grace and the output, for one replica.

    nsys: ``nsys profile --output=<run_dir>/profiles/<replica> --force-overwrite=true [args] <argv>``
    (nsys adds ``.nsys-rep``; its documented form puts the application right after the options).
    py-spy: ``py-spy record --output=<...>/<replica>.<svg|json|txt> [args] -- <argv>`` (the suffix follows
    ``--format``). rocprof: ``rocprofv3 --output-directory <...>/<replica> --output-file %pid% [args] --
    <argv>`` (args default to ``--runtime-trace``; the default rocpd format writes ``<pid>_results.db``, one
    per profiled process: an engine's workers are processes of their own). torch: ``<argv>`` unchanged,
    ``VLLM_TORCH_PROFILER_DIR`` and ``SGLANG_TORCH_PROFILER_DIR`` set to ``<...>/<replica>`` (a directory).
    """
    base = os.path.join(run_dir, "profiles", replica)
    grace = profile.grace_seconds if profile.grace_seconds is not None else PROFILE_GRACE_SECONDS[profile.tool]
    args = tuple(profile.args)
    if profile.tool == "nsys":
        wrapped = ("nsys", "profile", f"--output={base}", "--force-overwrite=true", *args, *argv)
        return wrapped, {}, grace, PlannedProfile("nsys", base, wraps=True)
    if profile.tool == "py-spy":
        output = base + _PY_SPY_SUFFIX.get(_option(args, ("-f", "--format")) or "flamegraph", ".svg")
        wrapped = ("py-spy", "record", f"--output={output}", *args, "--", *argv)
        return wrapped, {}, grace, PlannedProfile("py-spy", output, wraps=True)
    if profile.tool == "rocprof":
        chosen = args or ROCPROF_DEFAULT_ARGS
        wrapped = ("rocprofv3", "--output-directory", base, "--output-file", "%pid%", *chosen, "--", *argv)
        return wrapped, {}, grace, PlannedProfile("rocprof", base, wraps=True)
    env = dict.fromkeys(TORCH_PROFILER_ENV, base)
    return argv, env, grace, PlannedProfile("torch", base, wraps=False)
