"""Stands in for a supervisor that is about to die: starts the run's watchdog, then --replicas hard-to-kill
replica trees (tree.py, marked with the run id, each in its own session), tracks each leader, prints
'supervising <watchdog pid>' and idles until killed. With --bye it instead says goodbye to the watchdog and
exits at once, leaving the trees running (a test then checks that the watchdog swept nothing)."""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

from supervisor._host.process import REPLICA_ENV, RUN_ID_ENV
from supervisor._host.watchdog import Watchdog

parser = argparse.ArgumentParser()
parser.add_argument("--run-id", required=True)
parser.add_argument("--run-dir", required=True, type=Path)
parser.add_argument("--pids", required=True)
parser.add_argument("--grace", type=float, default=0.5)
parser.add_argument("--bye", action="store_true")
parser.add_argument("--idle-seconds", type=float, default=120.0)
parser.add_argument("--replicas", type=int, default=1)
args = parser.parse_args()

tree = Path(__file__).with_name("tree.py")
watchdog = Watchdog.spawn(args.run_id, args.run_dir)
for index in range(args.replicas):
    name = "engine" if args.replicas == 1 else f"engine.{index}"
    env = dict(os.environ, **{RUN_ID_ENV: args.run_id, REPLICA_ENV: name})
    argv = [
        sys.executable,
        str(tree),
        "--pids",
        args.pids,
        "--ignore-term",
        "--children",
        "2",
        "--setsid-children",
        "2",
    ]
    leader = subprocess.Popen([*argv, "--daemon"], env=env, stdout=subprocess.PIPE, start_new_session=True)
    assert leader.stdout is not None
    assert leader.stdout.readline().strip() == b"tree ready"
    watchdog.track(leader.pid, psutil.Process(leader.pid).create_time(), leader.pid, "SIGTERM", args.grace, name)
print(f"supervising {watchdog.pid}", flush=True)
if args.bye:
    sys.exit(watchdog.close(clean=True))
deadline = time.monotonic() + args.idle_seconds
while time.monotonic() < deadline:
    time.sleep(0.1)
