"""A process that grows its address space on command, for the --vm-limit tests.

One command per line on stdin, one JSON answer per line on stdout:
  mmap SIZE          anonymous private mapping (kept)      -> ok, errno
  mmapnone SIZE      PROT_NONE reservation (kept)
  brk SIZE           move the break up by SIZE (kept)
  mremap FROM TO     map FROM, then grow it to TO (MREMAP_MAYMOVE; kept)
  shm SIZE           shmget + shmat a SysV segment (kept; IPC_RMID at once)
  fork               fork a child that holds (its copy is counted in the cgroup)
  thread             start a thread that holds (its stack is a mapping)
  exec               fork a child that execs `sleep 3600`
  bench N            N pairs of mmap+munmap of one page: ns per pair
  vmsize             this process's VmSize
  quit
SIZE takes K/M/G. Every answer has "ok"; a failed call gives "errno" (a name).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import sys
import threading
import time

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                      ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.mremap.restype = ctypes.c_void_p
libc.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int]
libc.sbrk.restype = ctypes.c_void_p
libc.sbrk.argtypes = [ctypes.c_long]
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
libc.shmget.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]
libc.shmctl.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]

PROT_NONE, PROT_RW = 0, 3
MAP_PRIVATE_ANON = 0x02 | 0x20
MAP_FAILED = ctypes.c_void_p(-1).value
MREMAP_MAYMOVE = 1
IPC_PRIVATE, IPC_CREAT, IPC_RMID = 0, 0o1000, 0
UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
children: list[int] = []


def size(text: str) -> int:
    return int(text[:-1]) * UNITS[text[-1]] if text[-1] in UNITS else int(text)


def err() -> dict:
    e = ctypes.get_errno()
    return {"ok": False, "errno": errno.errorcode.get(e, str(e))}


def mmap(n: int, prot: int = PROT_RW):
    p = libc.mmap(None, n, prot, MAP_PRIVATE_ANON, -1, 0)
    return None if p in (None, MAP_FAILED) else p


def vmsize() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def hold_child() -> int:
    pid = os.fork()
    if pid == 0:
        time.sleep(3600)
        os._exit(0)
    children.append(pid)
    return pid


def do(cmd: list[str]) -> dict:
    op = cmd[0]
    if op in ("mmap", "mmapnone"):
        p = mmap(size(cmd[1]), PROT_RW if op == "mmap" else PROT_NONE)
        return {"ok": True} if p else err()
    if op == "brk":
        p = libc.sbrk(size(cmd[1]))
        return err() if p in (None, MAP_FAILED) else {"ok": True}
    if op == "mremap":
        p = mmap(size(cmd[1]))
        if not p:
            return err() | {"step": "mmap"}
        q = libc.mremap(p, size(cmd[1]), size(cmd[2]), MREMAP_MAYMOVE)
        return err() if q in (None, MAP_FAILED) else {"ok": True}
    if op == "shm":
        shmid = libc.shmget(IPC_PRIVATE, size(cmd[1]), IPC_CREAT | 0o600)
        if shmid < 0:
            return err() | {"step": "shmget"}
        p = libc.shmat(shmid, None, 0)
        out = err() if p in (None, MAP_FAILED) else {"ok": True}
        libc.shmctl(shmid, IPC_RMID, None)
        return out
    if op == "fork":
        return {"ok": True, "pid": hold_child()}
    if op == "thread":
        threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
        return {"ok": True}
    if op == "exec":
        pid = os.fork()
        if pid == 0:
            os.execvp("sleep", ["sleep", "3600"])
        children.append(pid)
        return {"ok": True, "pid": pid}
    if op == "bench":
        n = int(cmd[1])
        t0 = time.perf_counter_ns()
        for _ in range(n):
            p = libc.mmap(None, 4096, PROT_RW, MAP_PRIVATE_ANON, -1, 0)
            libc.munmap(p, 4096)
        return {"ok": True, "ns_per_pair": (time.perf_counter_ns() - t0) / n}
    if op == "vmsize":
        return {"ok": True, "vmsize": vmsize()}
    return {"ok": False, "errno": f"unknown command {op!r}"}


def main() -> int:
    try:
        for line in sys.stdin:
            cmd = line.split()
            if not cmd:
                continue
            if cmd[0] == "quit":
                break
            out = do(cmd)
            out["vmsize"] = out.get("vmsize", vmsize())
            print(json.dumps(out), flush=True)
    finally:
        for pid in children:
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
