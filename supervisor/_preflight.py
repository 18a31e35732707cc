"""Checks of the machine, made before anything starts: a failure here is bad input (exit 2), never a spawn."""

from __future__ import annotations

import os
import resource

from ._errors import ConfigError
from ._plan import Plan

__all__ = ["FDS_PER_REPLICA", "prepare_run_dir", "raise_open_files_limit"]

#: A replica holds its output pipe, its log file and a pidfd, and a probe's socket while it polls.
FDS_PER_REPLICA = 4
_FDS_BASE = 64  # the interpreter, the watchdog pipe, event and record files, the CLI's own


def raise_open_files_limit(plan: Plan) -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit (400 replicas do not fit the usual 1024), and
    refuse a plan that cannot fit even then. Returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    replicas = sum(len(service.replicas) for service in plan.services)
    needed = _FDS_BASE + FDS_PER_REPLICA * replicas
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # some platforms cap below the hard limit (macOS: OPEN_MAX)
            pass
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise ConfigError(
            f"{replicas} replicas need about {needed} open files, but the open-files limit "
            f"(RLIMIT_NOFILE, ulimit -n) is {soft} (hard limit {hard}): raise it, e.g. `ulimit -n {needed}` "
            "or LimitNOFILE= in a systemd unit",
            source=plan.source,
        )
    return int(soft)


def prepare_run_dir(plan: Plan) -> None:
    """Create the run's directory and prove it writable, so a read-only or full filesystem is a clear
    error before anything starts, not a traceback from the first log file."""
    logs = plan.run_dir / "logs"
    probe = plan.run_dir / ".writable"
    try:
        logs.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(plan.run_dir, 0o700)
        with open(probe, "wb") as file:
            file.write(b"\0" * 4096)
            file.flush()
            os.fsync(file.fileno())
        probe.unlink()
    except OSError as error:
        with_reason = error.strerror or str(error)
        raise ConfigError(
            f"run directory {plan.run_dir}: cannot write there ({with_reason}); "
            "free some space or choose another place with run_dir: or --runs-dir",
            source=plan.source,
        ) from None
