"""An exec probe that passes and leaves an escapee behind: a child that left the probe's session (setsid,
double fork), scrubbed its environment and let go of the probe's output (stdin/stdout/stderr on
/dev/null). Its pid goes to --pids; the probe exits only once the escapee has exec'd (no race with the
probe's own end, which kills what is still in its process group)."""

import argparse
import os

parser = argparse.ArgumentParser()
parser.add_argument("--pids", required=True)
args = parser.parse_args()

written, told = os.pipe()
child = os.fork()
if child == 0:
    os.setsid()
    if os.fork() == 0:
        with open(args.pids, "a") as file:
            file.write(f"{os.getpid()}\n")
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.execve("/bin/sleep", ["sleep", "300"], {})
    os._exit(0)
os.close(told)
os.waitpid(child, 0)
os.read(written, 1)  # end of file: the escapee exec'd (its end is close-on-exec)
