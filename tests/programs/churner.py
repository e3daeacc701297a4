"""A tenant's loop, for tests/integration/test_fresh_cgroups.py and bench/churn.py:
make a cgroup under TOP, move a sleeper in and back to HOME, remove it, for SECONDS; prints
how many cgroups it made. The sleeper, not the loop, goes in: a kill of TOP then ends only
it (and the loop starts another one).

  churner.py TOP HOME SECONDS     (TOP and HOME: absolute cgroup directories)
"""
import errno
import os
import subprocess
import sys
import time

top, home, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
sleeper = subprocess.Popen(["sleep", "600"])


def enter(path, pid):
    with open(os.path.join(path, "cgroup.procs"), "w") as f:
        f.write(str(pid))


n, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    path = os.path.join(top, f"c{n}")
    os.mkdir(path)
    try:
        enter(path, sleeper.pid)
        enter(home, sleeper.pid)
    except OSError:
        sleeper.wait()
        sleeper = subprocess.Popen(["sleep", "600"])
    while True:
        try:
            os.rmdir(path)
            break
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise
            time.sleep(0.01)
    n += 1
sleeper.kill()
sleeper.wait()
print(n, flush=True)
