"""A job that leaves a scrubbed child behind: ``env -i`` (no run mark), SIGTERM ignored, still in the job's
process group; the job itself prints its line and exits 0 at once. Its child's pid goes to --pids.

Only the process group ties the child to the run, and its leader is gone by the time anyone looks: the
supervisor must keep that group tracked (it does, until it reaps the leader), and so must its watchdog."""

import argparse
import subprocess

parser = argparse.ArgumentParser()
parser.add_argument("--pids", required=True)
parser.add_argument("--seconds", default="1000")
args = parser.parse_args()

child = subprocess.Popen(
    ["/bin/sh", "-c", f'trap "" TERM; exec sleep {int(args.seconds)}'],
    env={},  # env -i: no TOPOVISOR_RUN_ID, no TOPOVISOR_REPLICA
    stdin=subprocess.DEVNULL,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)
with open(args.pids, "a") as file:
    file.write(f"{child.pid}\n")
print("service ready", flush=True)
