"""Memory shapes for the sharing and victim tests (issue 11). Prints its PID and "ready"
on stdout once the memory is in place, then holds until killed.

  memshapes.py fork N SIZE        touch SIZE of private memory, then fork N-1 children that
                                  keep it shared copy-on-write (each writes one page)
  memshapes.py file PATH SIZE     map the file PATH shared and read every page of it
  memshapes.py shm N SIZE         an anonymous shared mapping (shmem) of SIZE, written by the
                                  first, forked into N-1 children that each write all of it
  memshapes.py touch SIZE [term=DIR]  touch SIZE of private memory; with term=DIR, SIGTERM
                                  makes it write DIR/PID.term and exit 0
"""

import mmap
import os
import signal
import sys
import time

PAGE = mmap.PAGESIZE


def size(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def touch(m, value=1):
    for off in range(0, len(m), PAGE):
        m[off] = value


def say(line):
    os.write(1, f"{line}\n".encode())   # one write: lines of forked children never interleave


def hold(kids=()):
    say(os.getpid())
    say("ready")
    while True:
        time.sleep(3600)


def forked(n, m, write_all=False):
    kids = []
    for i in range(n - 1):
        pid = os.fork()
        if pid == 0:
            if write_all:
                touch(m, 2 + i)
            else:
                m[0] = 2
            say(os.getpid())
            while True:
                time.sleep(3600)
        kids.append(pid)
    time.sleep(0.3)
    hold(kids)


def main(argv):
    mode = argv[0]
    if mode == "fork":
        m = mmap.mmap(-1, size(argv[2]), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        touch(m)
        forked(int(argv[1]), m)
    elif mode == "shm":
        m = mmap.mmap(-1, size(argv[2]), flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        touch(m)
        forked(int(argv[1]), m, write_all=True)
    elif mode == "file":
        fd = os.open(argv[1], os.O_RDONLY)
        m = mmap.mmap(fd, size(argv[2]), flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        sum(m[off] for off in range(0, len(m), PAGE))
        hold()
    elif mode == "touch":
        if argv[2:] and argv[2].startswith("term="):
            where = argv[2][5:]

            def term(*_):
                with open(os.path.join(where, f"{os.getpid()}.term"), "w") as f:
                    f.write("clean exit\n")
                os._exit(0)
            signal.signal(signal.SIGTERM, term)
        m = mmap.mmap(-1, size(argv[1]), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        touch(m)
        hold()
    else:
        sys.exit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
