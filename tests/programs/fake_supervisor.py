"""Stands in for a supervisor that is about to die: starts a hard-to-kill replica tree (tree.py, marked with
the run id, in its own session) and the run's watchdog, tracks the leader, prints 'supervising <watchdog
pid>', then idles until killed. With --bye it instead says goodbye to the watchdog and exits at once,
leaving the tree running (a test then checks that the watchdog swept nothing)."""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

from supervisor.process import REPLICA_ENV, RUN_ID_ENV
from supervisor.watchdog import Watchdog

parser = argparse.ArgumentParser()
parser.add_argument("--run-id", required=True)
parser.add_argument("--run-dir", required=True, type=Path)
parser.add_argument("--pids", required=True)
parser.add_argument("--grace", type=float, default=0.5)
parser.add_argument("--bye", action="store_true")
parser.add_argument("--idle-seconds", type=float, default=120.0)
args = parser.parse_args()

env = dict(os.environ, **{RUN_ID_ENV: args.run_id, REPLICA_ENV: "engine"})
tree = Path(__file__).with_name("tree.py")
leader = subprocess.Popen(
    [
        sys.executable,
        str(tree),
        "--pids",
        args.pids,
        "--ignore-term",
        "--children",
        "2",
        "--setsid-children",
        "2",
        "--daemon",
    ],
    env=env,
    stdout=subprocess.PIPE,
    start_new_session=True,
)
assert leader.stdout is not None
assert leader.stdout.readline().strip() == b"tree ready"
watchdog = Watchdog.spawn(args.run_id, args.run_dir)
watchdog.track(leader.pid, psutil.Process(leader.pid).create_time(), leader.pid, "SIGTERM", args.grace, "engine")
print(f"supervising {watchdog.pid}", flush=True)
if args.bye:
    sys.exit(watchdog.close(clean=True))
deadline = time.monotonic() + args.idle_seconds
while time.monotonic() < deadline:
    time.sleep(0.1)
