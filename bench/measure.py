#!/usr/bin/env python3
"""Runs a command and prints "wall_seconds cpu_seconds" of it and its children.

Used by the bench scripts so every tool is timed the same way (CPU = user+sys
of the command's process tree, from getrusage(RUSAGE_CHILDREN))."""
import resource
import subprocess
import sys
import time

before = resource.getrusage(resource.RUSAGE_CHILDREN)
start = time.monotonic()
rc = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)
wall = time.monotonic() - start
after = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
print(f"{wall:.3f} {cpu:.3f}")
sys.exit(rc)
