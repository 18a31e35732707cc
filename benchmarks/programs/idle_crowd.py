"""A crowd of idle foreign processes: ``idle_crowd.py COUNT ENV_BYTES LIFETIME_SECONDS``.

Starts COUNT ``sleep LIFETIME_SECONDS`` processes (each its own process, in this one's process group),
each with an environment of about ENV_BYTES (this one's, padded), prints ``ready COUNT`` and waits until
its stdin ends (the benchmark closes it, or dies). Then it SIGKILLs every child and reaps it, and exits.
The children never outlive LIFETIME_SECONDS in any case.
"""

import contextlib
import os
import signal
import sys


def environment(size: int) -> dict[str, str]:
    """This process's environment padded to about ``size`` bytes: a few long variables, as a shell's
    ``LS_COLORS`` or a module system's ``LOADEDMODULES`` are."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOPOVISOR_")}
    used = sum(len(k) + len(v) + 2 for k, v in env.items())
    index = 0
    while used < size:
        chunk = min(800, size - used)
        value = ":".join(f"*.ext{index}{n}=01;3{n % 8}" for n in range(chunk // 14 + 1))[:chunk]
        env[f"CROWD_FILLER_{index}"] = value
        used += len(value) + len(f"CROWD_FILLER_{index}") + 2
        index += 1
    return env


def main() -> int:
    count, env_bytes, lifetime = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the cleanup below runs on SIGTERM too
    env = environment(env_bytes)
    quiet = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
    children: list[int] = []
    try:
        for _ in range(count):
            children.append(os.posix_spawn("/bin/sleep", ["sleep", lifetime], env, file_actions=quiet))
        sys.stdout.write(f"ready {len(children)}\n")
        sys.stdout.flush()
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        for pid in children:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(OSError):
                os.waitpid(pid, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
