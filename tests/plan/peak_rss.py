#!/usr/bin/python3
"""Runs a command and prints its peak resident memory (the child's
ru_maxrss: VmHWM at its end) as `peak_rss_kib N` on stderr; exits with its
status. Under mpirun each rank gets its own:
    mpirun -np 2 python3 peak_rss.py embtrain train ..."""
import os
import resource
import subprocess
import sys

status = subprocess.call(sys.argv[1:])
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
# One write, newline included: under mpirun the ranks' lines must not
# interleave (print writes the text and its newline apart).
os.write(2, b"peak_rss_kib %d\n" % peak)
sys.exit(status)
