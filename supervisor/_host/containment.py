"""Containment: every process of a run inside the run's cgroup, each replica in a child cgroup of it.

A process can scrub its environment (``env -i``, so no run mark) and leave its process group (``setsid``,
a double fork): SGLang's schedulers and vLLM's engine cores do the second half. Neither takes it out of its
cgroup, so a run contained by cgroup is found whole by reading ``cgroup.procs``, whatever its members did,
and at the cost of the run's size, not the host's (a /proc scan reads every process's environment).

Modes, best first (``auto`` picks the first that works; a topology or ``--containment`` may require one):

- ``cgroup2``: ``<own cgroup>/topovisor-<run id>/<replica>`` in the unified hierarchy; teardown ends with
  ``cgroup.kill`` (kernel >= 5.14), or freeze + SIGKILL + thaw on older kernels.
- ``freezer``: the same tree in a v1 ``freezer`` hierarchy (what Slurm's proctrack/cgroup uses): freeze,
  SIGKILL every member, thaw.
- ``marks``: no cgroup: the run's environment mark and process groups, as before.

A replica enters its cgroup before its program's first instruction: it is started as ``/bin/sh -c
'echo $$ > cgroup.procs...; exec "$@"'`` (the pid stays, so does everything keyed on it), about 0.6 ms a
spawn. ``subprocess`` can put a child in a cgroup only through ``preexec_fn``, which forks the whole
supervisor instead of vfork and is unsafe with threads.

The functions on a path (``tree_pids``, ``kill_tree``, ``remove_tree``) serve the watchdog and ``gc``,
which know the run only from its records; they import nothing beyond the standard library.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path

from .._marks import CONTAINMENT_CHOICES as CHOICES
from .._spec.model import LIMIT_CONTROLLERS, ResourceLimits
from .cgroupfs import DELEGATION_HINT, CgroupHost, Hierarchy, read_small_file
from .limits import LimitUnavailable, enable_controllers, lift_limits, set_limits

__all__ = [
    "CHOICES",
    "MODES",
    "PROBES_CGROUP",
    "ContainmentUnavailable",
    "LimitUnavailable",
    "ReplicaCgroup",
    "RunContainment",
    "empty_and_remove",
    "kill_tree",
    "populated",
    "remove_tree",
    "replica_named",
    "signal_tree",
    "tree_pids",
    "warm_moves",
]

MODES = CHOICES[1:]  #: best first
_PREFIX = "topovisor-"
#: ends the cgroup of a replica named like a control file of its parent (v1's ``tasks``): no replica name has it
_CLASH_SUFFIX = "@"
PROBES_CGROUP = "@probes"  #: where exec probes run, beside the replicas' cgroups
_FREEZE_WAIT_SECONDS = 2.0
_EMPTY_WAIT_SECONDS = 10.0  #: after SIGKILL only a process stuck in the kernel (D state) stays longer
#: enters each cgroup.procs file given before ``--``, then becomes the program (exit 125: could not enter).
#: A program named ``-x``: bash (``/bin/sh`` on RHEL) takes it for an option of ``exec`` unless ``--`` comes
#: first, and dash takes that ``--`` for the program, so ``--`` is given to bash only
_ENTER_SCRIPT = (
    'i=0; for f do i=$((i+1)); [ "$f" = -- ] && break; '
    'echo $$ 2>/dev/null >"$f" || { echo "topovisor: cannot enter the cgroup $f" >&2; exit 125; }; '
    'done; shift $i; case $1 in -*) [ -n "${BASH_VERSION-}" ] && exec -- "$@";; esac; exec "$@"'
)


class ContainmentUnavailable(Exception):
    """The containment asked for cannot be had here: ``why``, and ``how`` to get it."""

    def __init__(self, mode: str, why: str, how: str) -> None:
        super().__init__(f"containment {mode} is not available: {why}; to get it: {how}")
        self.mode, self.why, self.how = mode, why, how


class ReplicaCgroup:
    """One replica's cgroup (and its cgroups in the extra v1 hierarchies that measure or limit it)."""

    def __init__(self, name: str, path: Path, extras: Sequence[Path] = ()) -> None:
        self.name = name
        self.path = path  #: in the hierarchy that contains the run (unified or freezer)
        self.extras = tuple(extras)  #: the same replica in v1 memory/cpu/pids hierarchies
        self.limits: ResourceLimits | None = None  #: set on it before a process enters

    def procs_files(self) -> list[str]:
        return [str(p / "cgroup.procs") for p in (self.path, *self.extras)]

    def pids(self) -> list[int]:
        return tree_pids(self.path)

    def populated(self) -> bool:
        return populated(self.path)

    def kill(self) -> None:
        kill_tree(self.path)

    def remove(self) -> bool:
        return all([remove_tree(p) for p in (self.path, *self.extras)])

    def __repr__(self) -> str:
        return f"<ReplicaCgroup {self.path}>"


class RunContainment:
    """The run's cgroup tree (or none: mode ``marks``), made before the first spawn, removed at the end."""

    def __init__(self, mode: str, path: Path | None = None, extras: Mapping[str, Path] | None = None) -> None:
        self.mode = mode
        self.path = path  #: the run's cgroup; None in mode ``marks``
        self.extras = dict(extras or {})  #: v1 controller -> the run's cgroup in that hierarchy
        self.why_not: dict[str, str] = {}  #: for ``auto``: why each better mode was passed over
        self._replicas: dict[str, ReplicaCgroup] = {}
        self._entered: set[str] = set()  #: replicas started into their cgroup (not a Slurm step, say)
        self.limits: dict[str, ResourceLimits] = {}  #: by service: set on each of its replicas' cgroups

    @classmethod
    def open(
        cls,
        run_id: str,
        request: str = "auto",
        *,
        host: CgroupHost | None = None,
        controllers: Collection[str] = (),
        limited: Collection[str] = (),
    ) -> RunContainment:
        """Make the run's cgroup in the best mode allowed by ``request``; ``ContainmentUnavailable`` when a
        required mode cannot be had. ``controllers``: v1 hierarchies (memory, cpu, pids) to place the
        replicas in as well. ``limited``: the controllers the services' limits need, from the unified
        hierarchy where it has them, else from v1; ``LimitUnavailable`` naming one that neither has. Where
        the unified hierarchy has no memory controller, the replicas also go into a v1 ``memory`` cgroup
        if there is one, for its counters (best effort)."""
        if request not in CHOICES:
            raise ValueError(f"containment must be one of {', '.join(CHOICES)}, got {request!r}")
        if request == "marks":
            if limited:
                raise LimitUnavailable("containment is marks: no cgroup to set limits on")
            return cls("marks")
        host = host or CgroupHost.read()
        tried = ("cgroup2", "freezer") if request == "auto" else (request,)
        why_not: dict[str, str] = {}
        for mode in tried:
            hierarchy = host.unified if mode == "cgroup2" else host.v1.get("freezer")
            try:
                path = _make_run_cgroup(mode, hierarchy, run_id)
            except ContainmentUnavailable as exc:
                why_not[mode] = exc.why
                continue
            assert hierarchy is not None
            try:
                v2 = (
                    frozenset(limited) & host.unified_controllers(hierarchy.own_dir)
                    if mode == "cgroup2"
                    else frozenset()
                )
                extras = _v1_cgroups(host, run_id, [*controllers, *(c for c in limited if c not in v2)], v2, mode)
                enable_controllers([hierarchy.own_dir, path], v2)
            except (ContainmentUnavailable, LimitUnavailable):
                remove_tree(path)
                raise
            contained = cls(mode, path, extras)
            contained.why_not = why_not
            return contained
        if request != "auto":
            raise ContainmentUnavailable(request, why_not[request], DELEGATION_HINT)
        if limited:
            passed = "; ".join(f"{mode}: {why}" for mode, why in why_not.items())
            raise LimitUnavailable(f"no cgroup can be made here ({passed})")
        marks = cls("marks")
        marks.why_not = why_not
        return marks

    @property
    def contained(self) -> bool:
        return self.path is not None

    def replica(self, name: str) -> ReplicaCgroup | None:
        """The replica's cgroup, made if needed (again after a scale-down removed it); None in mode marks."""
        if self.path is None:
            return None
        found = self._replicas.get(name)
        if found is None:
            own = _cgroup_name(name, [self.path, *self.extras.values()])
            found = ReplicaCgroup(name, self.path / own, [p / own for p in self.extras.values()])
            found.limits = self.limits.get(name.partition(".")[0])
            self._replicas[name] = found
        made = False
        for directory in (found.path, *found.extras):
            with contextlib.suppress(FileExistsError):
                directory.mkdir()
                made = True
        if made and found.limits is not None:
            set_limits(found.path, found.extras, found.limits)
        return found

    def enabled(self) -> frozenset[str]:
        """The controllers the unified hierarchy gives the run's replicas (its ``cgroup.subtree_control``)."""
        if self.mode != "cgroup2" or self.path is None:
            return frozenset()
        try:
            return frozenset((self.path / "cgroup.subtree_control").read_text().split())
        except OSError:
            return frozenset()

    def check_limits(self, limits: ResourceLimits | None) -> None:
        """``LimitUnavailable`` naming what ``limits`` need that the run's cgroups lack (a rolled spec's: the
        controllers were chosen when the run began)."""
        asked = limits.asked() if limits is not None else {}
        if not asked:
            return
        if self.path is None:
            raise LimitUnavailable("containment is marks: no cgroup to set limits on")
        missing = sorted({LIMIT_CONTROLLERS[field] for field in asked} - {*self.enabled(), *self.extras})
        if missing:
            raise LimitUnavailable(
                f"the run's cgroups have no {', '.join(missing)} controller (they are chosen when the run "
                "starts: start it with a limit of that kind)"
            )

    def relimit(self, name: str, limits: ResourceLimits | None) -> None:
        """The replica's limits from its next start on (a rolled spec's, or the previous ones back): set on its
        cgroup, and those it no longer has taken off. OSError when a file cannot be written."""
        cgroup = self.replica(name)
        if cgroup is None:
            return
        limits = limits if limits is not None and limits.asked() else None
        before = cgroup.limits.asked() if cgroup.limits is not None else {}
        if limits == cgroup.limits:
            return
        lift_limits(cgroup.path, cgroup.extras, [f for f in before if limits is None or f not in limits.asked()])
        if limits is not None:
            set_limits(cgroup.path, cgroup.extras, limits)
        cgroup.limits = limits

    def holding(self, name: str) -> ReplicaCgroup | None:
        """The replica's cgroup if its processes were started in it (else they are found by marks)."""
        return self._replicas.get(name) if name in self._entered else None

    def enter(self, name: str, argv: Sequence[str], env: Mapping[str, str], cwd: str | None) -> list[str]:
        """``argv`` started so that it enters ``name``'s cgroup before it runs (as is in mode marks).
        OSError as ``Popen`` raises it when ``argv[0]`` cannot be run: the shell would only say so later."""
        cgroup = self.replica(name)
        if cgroup is None:
            return list(argv)
        _check_executable(argv[0], env, cwd)
        self._entered.add(name)
        return _entering(cgroup.procs_files(), argv)

    def enter_probe(self, argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
        """An exec probe's ``argv`` started in the run's probe cgroup (``@probes``: no replica has that name),
        so that a probe's child that left its process group still ends with the run (teardown, watchdog,
        gc), without counting as a replica's process. As is in mode marks."""
        if self.path is None:
            return list(argv)
        probes = self.path / PROBES_CGROUP
        with contextlib.suppress(FileExistsError):
            probes.mkdir()
        _check_executable(argv[0], env, None)
        return _entering([str(probes / "cgroup.procs")], argv)

    def pids(self) -> list[int]:
        return [] if self.path is None else tree_pids(self.path)

    def kill(self) -> None:
        """SIGKILL every process of the run at once (the second Ctrl-C, the end of the sweep)."""
        if self.path is not None:
            kill_tree(self.path)

    def remove(self) -> bool:
        """Remove the run's cgroups; False while a process is still in one."""
        if self.path is None:
            return True
        return all([remove_tree(p) for p in (self.path, *self.extras.values())])

    def empty_and_remove(self, seconds: float = _EMPTY_WAIT_SECONDS) -> bool:
        """SIGKILL what is left, wait (bounded) until the cgroups are empty, remove them; False if not."""
        if self.path is None:
            return True
        return all([empty_and_remove(p, seconds) for p in (self.path, *self.extras.values())])

    def record(self) -> dict[str, object]:
        """What the records keep: the mode and every cgroup of the run (the watchdog and gc use them)."""
        return {
            "containment": self.mode,
            "cgroup": None if self.path is None else str(self.path),
            "cgroup_extras": [str(p) for p in self.extras.values()],
        }

    def describe(self) -> str:
        """One line for the start of a run: the mode, where, and why a better one was passed over."""
        where = f" ({self.path})" if self.path is not None else " (run marks and process groups)"
        passed = "; ".join(f"{mode}: {why}" for mode, why in self.why_not.items())
        return f"containment: {self.mode}{where}" + (f"; not {passed}" if passed else "")


def _cgroup_name(replica: str, parents: Sequence[Path]) -> str:
    """The name of the replica's cgroup in each of ``parents``: its own, unless a control file of one of them
    has it (a v1 cgroup's ``tasks`` or ``notify_on_release``, a service's plausible name)."""
    for parent in parents:
        entry = parent / replica
        if entry.exists() and not entry.is_dir():
            return replica + _CLASH_SUFFIX
    return replica


def replica_named(directory: str) -> str:
    """The replica whose cgroup has this name (see ``_cgroup_name``)."""
    return directory.removesuffix(_CLASH_SUFFIX)


def _v1_cgroups(
    host: CgroupHost, run_id: str, needed: Sequence[str], v2: Collection[str], mode: str
) -> dict[str, Path]:
    """The run's cgroups in the v1 hierarchies ``needed`` (``LimitUnavailable`` naming one that is missing),
    and in v1 ``memory`` (``cpuacct`` too under the freezer) for their counters where it can be had."""
    made: dict[str, Path] = {}
    try:
        for controller in dict.fromkeys(needed):
            where = "" if mode != "cgroup2" else " not enabled in the cgroup v2 hierarchy, and"
            if controller not in host.v1:
                raise LimitUnavailable(f"the {controller} controller is{where} not mounted as a cgroup v1 hierarchy")
            try:
                made[controller] = _make_run_cgroup(controller, host.v1[controller], run_id)
            except ContainmentUnavailable as exc:
                raise LimitUnavailable(f"the cgroup v1 {controller} hierarchy: {exc.why}") from None
    except LimitUnavailable:
        for path in made.values():
            remove_tree(path)
        raise
    measured = ["memory"] if mode == "freezer" or "memory" not in v2 else []
    for controller in [*measured, *(["cpuacct"] if mode == "freezer" else [])]:
        if controller not in made and controller in host.v1 and not (mode == "cgroup2" and controller == "cpuacct"):
            with contextlib.suppress(ContainmentUnavailable):
                made[controller] = _make_run_cgroup(controller, host.v1[controller], run_id)
    return made


def _entering(procs_files: Sequence[str], argv: Sequence[str]) -> list[str]:
    """``argv``, started so that it writes itself into each of ``procs_files`` first, then becomes itself."""
    return ["/bin/sh", "-c", _ENTER_SCRIPT, "topovisor-enter", *procs_files, "--", *argv]


def _make_run_cgroup(mode: str, hierarchy: Hierarchy | None, run_id: str) -> Path:
    if hierarchy is None:
        what = "no cgroup v2 hierarchy is mounted" if mode == "cgroup2" else f"no cgroup v1 {mode} hierarchy is mounted"
        raise ContainmentUnavailable(mode, what, DELEGATION_HINT)
    why = hierarchy.why_unusable(procs_file="cgroup.procs")
    if why is not None:
        raise ContainmentUnavailable(mode, why, DELEGATION_HINT)
    path = hierarchy.own_dir / f"{_PREFIX}{run_id}"
    try:
        path.mkdir()
    except FileExistsError:
        pass
    except OSError as exc:
        raise ContainmentUnavailable(mode, f"cannot make {path}: {exc.strerror or exc}", DELEGATION_HINT) from None
    return path


def _check_executable(program: str, env: Mapping[str, str], cwd: str | None) -> None:
    """Raise what ``Popen`` would for a program that cannot be run (not found, not executable, a format
    the kernel refuses): ``sh`` would run a file without ``#!`` as a shell script, and report a missing
    ``#!`` interpreter as 'not found' with exit 127, once the replica seemed started."""
    if "/" in program:
        path = program if os.path.isabs(program) or cwd is None else os.path.join(cwd, program)
        if not os.path.exists(path):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
        if os.path.isdir(path) or not os.access(path, os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)
    else:
        search = env.get("PATH", os.defpath).split(os.pathsep)
        if cwd is not None:  # the child looks from its own directory: a relative entry means one there
            search = [os.path.join(cwd, entry) for entry in search]
        found = shutil.which(program, path=os.pathsep.join(search))
        if found is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
        path = found
    _check_format(path, program)


def _check_format(path: str, program: str) -> None:
    """ENOEXEC for a text file without ``#!`` (or an empty one), ENOENT for a missing ``#!`` interpreter;
    anything else (ELF, a format ``binfmt_misc`` may know, an unreadable file) is left to the kernel."""
    try:
        with open(path, "rb") as file:
            head = file.read(256)
    except OSError:
        return
    if head.startswith(b"#!"):
        line, newline, _ = head[2:].partition(b"\n")
        if not newline and len(head) == 256:
            return  # the kernel's own limit: whatever it says then
        words = line.split()
        if not words:
            raise OSError(errno.ENOEXEC, os.strerror(errno.ENOEXEC), program)
        interpreter = os.fsdecode(words[0])
        if os.path.isabs(interpreter) and not os.path.exists(interpreter):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
    elif b"\0" not in head:  # text (a binary format has NULs in its header): the kernel refuses it
        raise OSError(errno.ENOEXEC, os.strerror(errno.ENOEXEC), program)


# ----- the kernel's cost of a first move --------------------------------------------------------------------
_WARM_BOUND_SECONDS = 2.0
_WARM_INTERVAL_SECONDS = 0.005


def warm_moves(host: CgroupHost | None = None, *, seconds: float = _WARM_BOUND_SECONDS) -> Callable[[], None]:
    """Keep the kernel ready for cgroup moves while a run starts; returns what stops it (bounded anyway).

    A move into a cgroup takes the cgroup core's thread-group lock for writing, which first waits for an RCU
    grace period unless another move came just before (10-25 ms on a loaded host, measured; none with the
    hierarchy mounted ``favordynmods``). The first replica's move would pay it on the way to its first
    instruction. A thread that moves this process into the cgroup it is already in (a no-op) every few ms
    while the run is planned pays it instead, off the path, and the replicas' moves find the lock ready."""
    host = host or CgroupHost.read()
    hierarchy = host.unified or host.v1.get("freezer")
    if hierarchy is None or hierarchy.read_only:
        return lambda: None
    procs = hierarchy.own_dir / "cgroup.procs"
    if not os.access(procs, os.W_OK):
        return lambda: None
    import threading

    stop = threading.Event()

    def keep_warm() -> None:
        deadline = time.monotonic() + seconds
        pid = str(os.getpid()).encode()
        try:
            fd = os.open(procs, os.O_WRONLY)
        except OSError:
            return
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                os.write(fd, pid)
                stop.wait(_WARM_INTERVAL_SECONDS)
        except OSError:
            pass  # not allowed after all (a controller enabled below us, say): the moves just cost more
        finally:
            os.close(fd)

    threading.Thread(target=keep_warm, name="topovisor cgroup warm-up", daemon=True).start()
    return stop.set


# ----- a cgroup tree known by its path: the run's teardown, the watchdog, gc ------------------------------
def tree_pids(path: Path) -> list[int]:
    """Every process in the cgroup ``path`` and its descendants (empty when it does not exist)."""
    found: list[int] = []
    for directory, _, _ in os.walk(path):
        with contextlib.suppress(OSError):  # the resource sampler reads this for every replica at every round
            found.extend(int(word) for word in read_small_file(os.path.join(directory, "cgroup.procs")).split())
    return found


def populated(path: Path) -> bool:
    """Whether any live process is in the tree (v2 says so itself: ``cgroup.events``)."""
    try:
        with open(path / "cgroup.events", "rb") as file:
            for line in file:
                if line.startswith(b"populated "):
                    return line.split()[1] != b"0"
    except FileNotFoundError:
        if not path.exists():
            return False
    except OSError:
        pass
    return any(_alive(pid) for pid in tree_pids(path))


def kill_tree(path: Path) -> None:
    """SIGKILL every process in the tree, including one forking as fast as it can: ``cgroup.kill`` where the
    kernel has it, else freeze (v2 ``cgroup.freeze`` or the v1 freezer), kill, thaw."""
    if not path.exists():
        return
    if _write(path / "cgroup.kill", "1"):
        return
    if (path / "cgroup.freeze").exists():
        _write(path / "cgroup.freeze", "1")
        _wait_for(lambda: b"frozen 1" in _read(path / "cgroup.events"))
        _signal_pids(tree_pids(path), signal.SIGKILL)
        _write(path / "cgroup.freeze", "0")
    elif (path / "freezer.state").exists():
        _write(path / "freezer.state", "FROZEN")
        _wait_for(lambda: _read(path / "freezer.state").strip() == b"FROZEN")
        _signal_pids(tree_pids(path), signal.SIGKILL)
        _write(path / "freezer.state", "THAWED")
    else:
        _signal_pids(tree_pids(path), signal.SIGKILL)


def signal_tree(path: Path, signum: int) -> list[int]:
    """Send ``signum`` to every process in the tree; returns their pids."""
    pids = tree_pids(path)
    _signal_pids(pids, signum)
    return pids


def empty_and_remove(path: Path, seconds: float = _EMPTY_WAIT_SECONDS) -> bool:
    """Kill the tree if anything is in it, wait (bounded) until it is empty, remove it; True once gone."""
    if not path.exists():
        return True
    if populated(path):
        kill_tree(path)
        _wait_for(lambda: not populated(path), seconds)
    return remove_tree(path)


def remove_tree(path: Path) -> bool:
    """Remove the cgroup and its descendants (deepest first); True when it is gone (or never was)."""
    if not path.exists():
        return True
    for directory, _, _ in sorted(os.walk(path), key=lambda entry: -entry[0].count(os.sep)):
        with contextlib.suppress(FileNotFoundError):
            try:
                os.rmdir(directory)
            except OSError:
                return False
    return not path.exists()


def _signal_pids(pids: Sequence[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signum)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            state = file.read().rpartition(b")")[2].split()[:1]
    except OSError:
        return False
    return state not in ([b"Z"], [b"X"])


def _write(path: Path, text: str) -> bool:
    try:
        with open(path, "w") as file:
            file.write(text)
    except OSError:
        return False
    return True


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _wait_for(done: Callable[[], bool], seconds: float = _FREEZE_WAIT_SECONDS) -> None:
    """Poll ``done`` (bounded): freezing takes a moment, and a SIGKILL to a half-frozen tree may miss a fork."""
    deadline = time.monotonic() + seconds
    delay = 0.001
    while not done() and time.monotonic() < deadline:
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
