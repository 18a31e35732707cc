"""A service that is hard to kill: optionally ignores SIGTERM and starts grandchildren, some in their own
session (setsid), some ignoring SIGTERM, one double-forked away from its parent. Writes every pid it
started to --pids so a test can check that none survives. Prints 'tree ready' once all are running."""

import argparse
import os
import signal
import subprocess
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--pids", required=True)
parser.add_argument("--ignore-term", action="store_true")
parser.add_argument("--children", type=int, default=0)
parser.add_argument("--setsid-children", type=int, default=0)
parser.add_argument("--daemon", action="store_true", help="double-fork a grandchild away to init")
parser.add_argument("--role", default="leader")
args = parser.parse_args()

if args.ignore_term:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

SLEEPER = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: time.sleep(1)"
pids = [os.getpid()]
children = []
for _ in range(args.children):
    children.append(subprocess.Popen([sys.executable, "-c", SLEEPER]))
for _ in range(args.setsid_children):
    children.append(subprocess.Popen([sys.executable, "-c", SLEEPER], start_new_session=True))
pids += [c.pid for c in children]
if args.daemon:
    read_fd, write_fd = os.pipe()
    if os.fork() == 0:  # intermediate: start a new session, fork the daemon, exit
        os.setsid()
        if os.fork() == 0:
            os.write(write_fd, f"{os.getpid()}\n".encode())
            os.execv(sys.executable, [sys.executable, "-c", SLEEPER])
        os._exit(0)
    os.close(write_fd)
    pids.append(int(os.read(read_fd, 64).decode().strip()))
with open(args.pids, "a") as file:
    file.write("".join(f"{pid}\n" for pid in pids))
print("tree ready", flush=True)
while True:
    time.sleep(1)
