"""Sleeps argv[1] seconds, prints ``ready``, then idles until killed (the DAG benchmark's service)."""

import sys
import time

time.sleep(float(sys.argv[1]))
sys.stdout.write("ready\n")
sys.stdout.flush()
while True:
    time.sleep(3600)
