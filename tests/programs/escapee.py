"""A service whose children escape every mark: each forks, scrubs its environment (no run mark), calls
``setsid`` (leaves the replica's process group and session) and double-forks, so the survivor is a
child of PID 1 that ignores SIGTERM. Its pid goes to --pids. With --loop it keeps doing this, SIGTERM
ignored, until it is killed (bounded: --most escapees), so that escapees are made while it is stopped.

Only the replica's cgroup still holds them: what SGLang's schedulers (setsid) and vLLM's engine cores do,
with the environment scrubbed on top."""

import argparse
import os
import signal
import time

parser = argparse.ArgumentParser()
parser.add_argument("--pids", required=True)
parser.add_argument("--loop", action="store_true")
parser.add_argument("--most", type=int, default=200)
args = parser.parse_args()


def escape() -> None:
    """Returns once the escapee's pid is written (its pipe end closes at its exec: close-on-exec)."""
    written, told = os.pipe()
    child = os.fork()
    if child == 0:
        os.setsid()
        if os.fork() == 0:
            with open(args.pids, "a") as file:
                file.write(f"{os.getpid()}\n")
            os.execve("/bin/sh", ["/bin/sh", "-c", 'trap "" TERM; exec sleep 1000'], {})
        os._exit(0)
    os.close(told)
    os.waitpid(child, 0)
    os.read(written, 1)  # end of file: the escapee exec'd, after writing its pid
    os.close(written)


escape()
print("escapee ready", flush=True)
if args.loop:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for _ in range(args.most):
        escape()
        time.sleep(0.01)
time.sleep(1000)
