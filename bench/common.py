"""Shared pieces of the benchmark programs: cgroups under one prefix, beanwatch runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from observer.cgroupfs import find_mounts  # noqa: E402

MiB = 1 << 20


def beanwatch(*args: str) -> list[str]:
    exe = shutil.which("beanwatch", path=os.path.dirname(sys.executable)) or "beanwatch"
    return [exe, *args]


class Scratch:
    """Cgroups for one benchmark run under a unique prefix; cleanup kills and removes them."""

    def __init__(self, tag: str):
        self.mount = find_mounts().cgroup2
        self.prefix = f"/beanwatch-bench-{tag}-{uuid.uuid4().hex[:6]}"
        os.mkdir(self.mount + self.prefix)

    def make(self, name: str) -> str:
        rel = f"{self.prefix}/{name}"
        os.makedirs(self.mount + rel, exist_ok=True)
        return rel

    def spawn(self, rel: str, argv, **kw) -> subprocess.Popen:
        procs = os.path.join(self.mount + rel, "cgroup.procs")

        def join():
            with open(procs, "w") as f:
                f.write(str(os.getpid()))
        return subprocess.Popen(argv, preexec_fn=join, **kw)

    def cleanup(self) -> None:
        top = self.mount + self.prefix
        dirs = sorted((d for d, _, _ in os.walk(top)), key=len, reverse=True)
        for d in dirs:
            for name, value in (("cgroup.freeze", "0"), ("cgroup.kill", "1")):
                try:
                    with open(os.path.join(d, name), "w") as f:
                        f.write(value)
                except OSError:
                    pass
        for d in dirs:
            for _ in range(200):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()


def json_records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def build(src: str, out_dir: str, flags=()) -> str:
    exe = os.path.join(out_dir, os.path.splitext(os.path.basename(src))[0])
    subprocess.run(["gcc", "-O2", "-Wall", *flags, "-o", exe, os.path.join(ROOT, src)], check=True)
    return exe
